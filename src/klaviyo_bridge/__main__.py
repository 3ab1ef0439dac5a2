"""``python -m klaviyo_bridge`` is the same as the ``klaviyo-bridge`` command."""

from .cli import main

main()
