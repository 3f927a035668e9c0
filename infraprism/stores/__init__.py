"""Redis repositories both sides share: anomaly records and API keys. Above the core, below pipeline/ and api/."""
