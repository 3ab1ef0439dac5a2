"""Run Treasure Workflow (``.dig``) files in the shape the seed's export examples use::

    _export:
      td:
        database: klaviyo_db

    +klaviyo_export_task:
      td>: export_data.sql
      database: ${td.database}
      result_connection: new_created_klaviyo_auth
      result_settings:
        type: klaviyo
        operation: add
        ...

``_export`` defines variables (nested keys read as ``${td.database}``), visible to the tasks below
it; ``+name`` tasks run in file order (a task may hold ``+child`` tasks, run in order); ``td>: FILE``
runs the SQL file (relative to the .dig) on the warehouse and, with ``result_settings``, exports the
result through the export engine. Other operators are refused with a clear message rather than
skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigError
from ..exports.job import export_query, report_lines
from ..exports.runner import ExportResult
from ..exports.settings import load_result_settings
from ..exports.source import read_query
from ..store.warehouse import Warehouse
from .document import TASK_KEYS, interpolate, load_workflow, merge


@dataclass
class TaskResult:
    name: str
    rows: int | None = None
    export: ExportResult | None = None
    lines: list[str] = field(default_factory=list)


@dataclass
class WorkflowRunner:
    """Runs one workflow file's tasks in order against a warehouse."""

    warehouse: Warehouse
    credentials_path: Path | None = None
    transport: httpx.AsyncBaseTransport | None = None
    dry_run: bool = False
    warn: Callable[[str], None] | None = None
    echo: Callable[[str], None] | None = None
    export_options: dict[str, Any] = field(default_factory=dict)
    #: td> files by path relative to the .dig (a pushed workflow's stored copies); None: read from disk.
    files: dict[str, str] | None = None

    def run(self, path: str | Path, params: Mapping[str, Any] | None = None) -> list[TaskResult]:
        """Run the file's tasks once (a ``schedule:`` block is ignored here: see ``workflow push``)."""
        p = Path(path)
        doc = load_workflow(p, self.warn)
        return self.run_document(doc, p.stem, params, folder=p.parent)

    def run_document(
        self, doc: Mapping[str, Any], name: str, params: Mapping[str, Any] | None = None, folder: Path | None = None
    ) -> list[TaskResult]:
        """Run an already-parsed workflow (e.g. the copy ``workflow push`` stored)."""
        variables = merge({}, params or {})
        results: list[TaskResult] = []
        self._run_group(doc, variables, folder or Path("."), name, results)
        return results

    def _read_sql(self, name: str, folder: Path, relative: str) -> str:
        if self.files is not None:
            if relative not in self.files:
                raise ConfigError(f"{name}: {relative} was not stored when the workflow was pushed (push it again)", key="td>")
            return self.files[relative]
        sql_file = folder / relative
        try:
            return sql_file.read_text()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {sql_file}: {exc.strerror}", key="td>") from None

    def _run_group(
        self, group: Mapping[str, Any], variables: dict[str, Any], folder: Path, prefix: str, results: list[TaskResult]
    ) -> None:
        if isinstance(group.get("_export"), Mapping):
            variables = merge(variables, interpolate(group["_export"], variables, f"{prefix}._export"))
        for key, body in group.items():
            if not key.startswith("+"):
                continue
            name = f"{prefix}{key}"
            if not isinstance(body, Mapping):
                raise ConfigError(f"{name}: a task needs a mapping of settings", key=key)
            subtasks = [k for k in body if k.startswith("+")]
            if subtasks and "td>" not in body:
                self._run_group(body, variables, folder, name, results)
                continue
            results.append(self._run_task(name, body, variables, folder))

    def _run_task(self, name: str, body: Mapping[str, Any], variables: dict[str, Any], folder: Path) -> TaskResult:
        if isinstance(body.get("_export"), Mapping):
            variables = merge(variables, interpolate(body["_export"], variables, f"{name}._export"))
        operators = [k for k in body if k.endswith(">")]
        if operators != ["td>"]:
            raise ConfigError(
                f"{name}: only the td> operator is supported here (found: {', '.join(operators) or 'none'})", key=name
            )
        unknown = sorted(set(k for k in body if not k.startswith("+")) - TASK_KEYS)
        if unknown:
            raise ConfigError(
                f"{name}: unknown task key(s) {', '.join(unknown)} (known: {', '.join(sorted(TASK_KEYS))})", key=unknown[0]
            )
        task = interpolate({k: v for k, v in body.items() if k != "_export"}, variables, name)
        sql = self._read_sql(name, folder, str(task["td>"]))
        database = task.get("database")
        if database is None and isinstance(variables.get("td"), Mapping):
            database = variables["td"].get("database")
        result = TaskResult(name)
        if "result_settings" not in task:
            table = read_query(self.warehouse, sql, database)
            result.rows = table.num_rows
            result.lines.append(f"{name}: query returned {table.num_rows:,} rows (no result_settings: nothing exported)")
        else:
            if not isinstance(task["result_settings"], Mapping):
                raise ConfigError(f"{name}: result_settings must be a mapping", key="result_settings")
            settings = load_result_settings(
                task["result_settings"],
                connection=task.get("result_connection"),
                credentials_path=self.credentials_path,
                warn=self.warn,
            )
            export = export_query(
                self.warehouse,
                sql,
                settings,
                database=database,
                job=name,
                dry_run=self.dry_run,
                transport=self.transport,
                **self.export_options,
            )
            result.export = export
            result.rows = export.summary.total
            result.lines += [f"{name}: {line}" for line in report_lines(export, settings)]
        for line in result.lines:
            if self.echo:
                self.echo(line)
        return result


def run_workflow(path: str | Path, warehouse: Warehouse, **kw: Any) -> list[TaskResult]:
    params = kw.pop("params", None)
    return WorkflowRunner(warehouse, **kw).run(path, params)
