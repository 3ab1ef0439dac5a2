"""Workflow files (Treasure Workflow ``.dig``) that run queries and export their results.

``document``: reading a workflow and its ``${...}`` variables (light); ``dig``: running its tasks
(the export engine). This package loads neither until one is imported.
"""
