"""Workers that need both the pipeline's change feed and the API's read model."""
