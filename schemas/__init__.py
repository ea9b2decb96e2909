"""trustplane's Avro schemas (``*.avsc``, older versions in ``history/``) and ClickHouse
migrations (``sql/``), shipped as package data; read them with ``importlib.resources``
(``importlib.resources.files("schemas")``). The wire format is in ``README.md`` here.
"""
