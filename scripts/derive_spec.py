#!/usr/bin/env python3
"""Regenerate src/klaviyo_spec/spec_data.json from Klaviyo's OpenAPI spec.

Usage: python scripts/derive_spec.py [path/to/stable.json]
(default: $KLAVIYO_OPENAPI_SPEC, else ../shared/klaviyo-openapi/stable.json)
"""

import json
import sys

from klaviyo_spec.derive import OUTPUT, find_spec, render


def main() -> int:
    spec_path = find_spec(sys.argv[1] if len(sys.argv) > 1 else None)
    if spec_path is None:
        print("stable.json not found; pass its path", file=sys.stderr)
        return 2
    text = render(json.loads(spec_path.read_text()))
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text) // 1024} KiB) from {spec_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
