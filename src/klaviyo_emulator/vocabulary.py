"""Word lists the synthetic account draws from (names, places, products, metrics).

Kept as plain tuples: rows store small integer codes into them, never strings.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Ava", "Liam", "Olivia", "Noah", "Emma", "Oliver", "Charlotte", "Elijah", "Amelia", "James",
    "Sophia", "William", "Isabella", "Benjamin", "Mia", "Lucas", "Evelyn", "Henry", "Harper", "Theodore",
    "Luna", "Jack", "Camila", "Levi", "Gianna", "Alexander", "Elizabeth", "Jackson", "Eleanor", "Mateo",
    "Ella", "Daniel", "Abigail", "Michael", "Sofia", "Mason", "Avery", "Sebastian", "Scarlett", "Ethan",
    "Emily", "Logan", "Aria", "Owen", "Penelope", "Samuel", "Chloe", "Jacob", "Layla", "Asher",
    "Mila", "Aiden", "Nora", "John", "Hazel", "Joseph", "Madison", "Wyatt", "Ellie", "David",
    "Lily", "Leo", "Nova", "Luke", "Isla", "Julian", "Grace", "Hudson", "Violet", "Grayson",
    "Aurora", "Matthew", "Riley", "Ezra", "Zoey", "Gabriel", "Willow", "Carter", "Emilia", "Isaac",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example.co.uk")
ORGANIZATIONS = ("Acme Corp", "Globex", "Initech", "Umbrella Retail", "Stark Goods", "Wayne Supply", "Hooli", "Vandelay Imports")
TITLES = ("Buyer", "Marketing Manager", "Engineer", "Founder", "Designer", "Analyst", "Teacher", "Nurse")
LOCALES = ("en-US", "en-GB", "en-CA", "fr-FR", "de-DE", "es-ES", "en-AU")
STREETS = ("Main St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Harbor Blvd", "Market St")

#: city, region, country, zip, timezone, latitude, longitude
CITIES = (
    ("Boston", "Massachusetts", "United States", "02110", "America/New_York", 42.3601, -71.0589),
    ("New York", "New York", "United States", "10001", "America/New_York", 40.7128, -74.0060),
    ("Chicago", "Illinois", "United States", "60601", "America/Chicago", 41.8781, -87.6298),
    ("Austin", "Texas", "United States", "73301", "America/Chicago", 30.2672, -97.7431),
    ("Denver", "Colorado", "United States", "80202", "America/Denver", 39.7392, -104.9903),
    ("Seattle", "Washington", "United States", "98101", "America/Los_Angeles", 47.6062, -122.3321),
    ("San Francisco", "California", "United States", "94103", "America/Los_Angeles", 37.7749, -122.4194),
    ("Toronto", "Ontario", "Canada", "M5H 2N2", "America/Toronto", 43.6532, -79.3832),
    ("London", "England", "United Kingdom", "EC1A 1BB", "Europe/London", 51.5074, -0.1278),
    ("Paris", "Ile-de-France", "France", "75001", "Europe/Paris", 48.8566, 2.3522),
    ("Berlin", "Berlin", "Germany", "10115", "Europe/Berlin", 52.5200, 13.4050),
    ("Sydney", "New South Wales", "Australia", "2000", "Australia/Sydney", -33.8688, 151.2093),
)
PRODUCTS = (
    ("Classic Tee", 24.0), ("Denim Jacket", 89.0), ("Running Shoes", 120.0), ("Wool Beanie", 18.0),
    ("Canvas Tote", 32.0), ("Leather Wallet", 55.0), ("Sunglasses", 75.0), ("Water Bottle", 22.0),
    ("Hoodie", 64.0), ("Yoga Mat", 40.0),
)
SIGNUP_SOURCES = ("popup", "checkout", "footer form", "import", "api")
LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")

#: (metric name, integration name, integration category, relative frequency)
METRICS = (
    ("Received Email", "Klaviyo", "Internal", 30),
    ("Opened Email", "Klaviyo", "Internal", 14),
    ("Clicked Email", "Klaviyo", "Internal", 5),
    ("Bounced Email", "Klaviyo", "Internal", 1),
    ("Marked Email as Spam", "Klaviyo", "Internal", 1),
    ("Dropped Email", "Klaviyo", "Internal", 1),
    ("Unsubscribed", "Klaviyo", "Internal", 1),
    ("Subscribed to List", "Klaviyo", "Internal", 2),
    ("Unsubscribed from List", "Klaviyo", "Internal", 1),
    ("Updated Email Preferences", "Klaviyo", "Internal", 1),
    ("Received SMS", "Klaviyo", "Internal", 4),
    ("Sent SMS", "Klaviyo", "Internal", 4),
    ("Clicked SMS", "Klaviyo", "Internal", 1),
    ("Failed to Deliver SMS", "Klaviyo", "Internal", 1),
    ("Failed to Deliver Automated Response SMS", "Klaviyo", "Internal", 1),
    ("Received Automated Response SMS", "Klaviyo", "Internal", 1),
    ("Consented to Receive SMS", "Klaviyo", "Internal", 1),
    ("Unsubscribed from SMS", "Klaviyo", "Internal", 1),
    ("Placed Order", "Shopify", "eCommerce", 4),
    ("Ordered Product", "Shopify", "eCommerce", 5),
    ("Viewed Product", "API", "API", 10),
    ("Started Checkout", "Shopify", "eCommerce", 3),
    ("Active on Site", "API", "API", 8),
)
#: Metrics only accounts with ``second_store`` have: the same names as others, another integration.
SECOND_STORE_METRICS = (("Placed Order", "WooCommerce", "eCommerce", 0),)
#: Every metric an account may have; an event's metric code indexes this.
ALL_METRICS = METRICS + SECOND_STORE_METRICS
INTEGRATION_IDS = {"Klaviyo": "0rG4eQ", "Shopify": "0eMvjm", "API": "7FtS4J", "WooCommerce": "8WcQm3"}
SUPPRESSION_REASONS = ("HARD_BOUNCE", "INVALID_EMAIL", "SPAM_COMPLAINT", "UNSUBSCRIBE", "USER_SUPPRESSED")
LIST_NAMES = ("Newsletter", "VIP Customers", "Back in Stock", "SMS Subscribers", "Wholesale", "Holiday Leads", "Preview List", "Event RSVPs")
SEGMENT_NAMES = ("Engaged (90 days)", "Repeat Purchasers", "Lapsed Customers", "High Value", "New Subscribers", "Window Shoppers")
CAMPAIGN_THEMES = ("Spring Sale", "New Arrivals", "Weekly Digest", "Flash Sale", "Holiday Gift Guide", "Back in Stock", "VIP Early Access", "Product Launch")
CAMPAIGN_STATUSES = ("Draft", "Scheduled", "Sent", "Sent", "Sent", "Cancelled", "Sending")
FLOW_NAMES = (
    ("Welcome Series", "Added to List"), ("Abandoned Cart", "Metric"), ("Browse Abandonment", "Metric"),
    ("Post-Purchase Thank You", "Metric"), ("Winback", "Metric"), ("Birthday", "Date Based"),
    ("Price Drop Alert", "Price Drop"), ("Low Inventory Alert", "Low Inventory"), ("Draft Flow", "Unconfigured"),
)
FLOW_STATUSES = ("live", "live", "manual", "draft")
TAG_NAMES = ("promo", "newsletter", "automation", "vip", "seasonal")
