"""The console's routes, one module per surface (each exports ``routes``)."""
