"""Workflow files (Treasure Workflow ``.dig``) that run queries and export their results."""

from .dig import TaskResult, WorkflowRunner, interpolate, load_workflow, run_workflow

__all__ = ["TaskResult", "WorkflowRunner", "interpolate", "load_workflow", "run_workflow"]
