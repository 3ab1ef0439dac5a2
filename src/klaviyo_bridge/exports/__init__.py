"""Export engine: query results -> Klaviyo (add to list, remove from list, batch consent)."""
