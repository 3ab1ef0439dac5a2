"""Import engine: Klaviyo data sources -> Arrow batches -> warehouse tables."""
