"""Run airbyte-source-klaviyo through its Python entry point (``source_klaviyo.run.run``, the
``source-klaviyo`` command) against the emulator: ``python airbyte_klaviyo_run.py BASE_URL <args>``.

The connector hard-codes https://a.klaviyo.com in its manifest (``url_base``) and in
``CampaignsDetailedTransformation.url_base``; only those are changed."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import loopback_only  # noqa: E402,F401

BASE = sys.argv.pop(1).rstrip("/")
KLAVIYO = "https://a.klaviyo.com"

from airbyte_cdk.sources.declarative.yaml_declarative_source import YamlDeclarativeSource  # noqa: E402

_read_manifest = YamlDeclarativeSource._read_and_parse_yaml_file


def _rebase(node):
    if isinstance(node, dict):
        return {key: _rebase(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_rebase(value) for value in node]
    if isinstance(node, str) and node.startswith(KLAVIYO):
        return BASE + node[len(KLAVIYO) :]
    return node


YamlDeclarativeSource._read_and_parse_yaml_file = lambda self, path: _rebase(_read_manifest(self, path))

from source_klaviyo.components import campaign_details_transformations  # noqa: E402

campaign_details_transformations.CampaignsDetailedTransformation.url_base = BASE + "/api/"

from source_klaviyo.run import run  # noqa: E402

run()
