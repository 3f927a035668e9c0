"""Dev tooling: `infraprism dev`, its local services and demo data. Imports everything below it."""
