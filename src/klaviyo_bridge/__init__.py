"""klaviyo-bridge: two-way data integration between your data and Klaviyo."""

__version__ = "0.1.0"
