"""The chaos suite: signed intents under SIGKILL/SIGSTOP of workers, sink, notary and
brokers, then an independent audit of what every reader sees.

Modules, one job each:

- :mod:`~bench.chaos.load`: the workload (classes whose right outcome is known) and the
  publisher;
- :mod:`~bench.chaos.plan`: the seeded fault plan, written as JSON;
  :mod:`~bench.chaos.faults`: executing it on time;
- :mod:`~bench.chaos.cluster`: the broker(s), its own (killable) or someone else's;
- :mod:`~bench.chaos.services`: the worker, sink and notary processes;
- :mod:`~bench.chaos.live`: outcome arrivals and the answers to held intents, during the run;
- :mod:`~bench.chaos.collect`: read_committed readers and the sink's row counts;
- :mod:`~bench.chaos.check`: the invariants (pure), :mod:`~bench.chaos.recovery`:
  recovery times (pure), :mod:`~bench.chaos.selftest`: the checker fed corrupted data;
- :mod:`~bench.chaos.report`: the line and the JSON; :mod:`~bench.chaos.run`: the run;
  :mod:`~bench.chaos.cli`: ``python -m bench.chaos``.
"""
