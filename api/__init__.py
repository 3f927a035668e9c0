"""Redis -> HTTP: the read-only analytics API. Imports the core and stores, never the pipeline."""
