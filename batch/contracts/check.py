"""Runs a contract suite on a Spark DataFrame and turns failures into a report a person can act on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from pyspark.sql import DataFrame

from segue.batch.contracts.suites import SUITES

_LOGGER = logging.getLogger(__name__)
_EXAMPLES = 5


@dataclass(frozen=True)
class RuleFailure:
    rule: str
    rows_affected: int | None
    rows_checked: int | None
    examples: list[dict[str, Any]]

    def describe(self) -> str:
        if self.rows_affected is None:
            count = "table-level rule"
        else:
            count = f"{self.rows_affected:,} of {self.rows_checked:,} rows"
        lines = [f"  x {self.rule}: {count}"]
        lines += [f"      e.g. {', '.join(f'{k}={v!r}' for k, v in ex.items())}" for ex in self.examples]
        return "\n".join(lines)


@dataclass(frozen=True)
class ContractReport:
    suite: str
    rules_checked: int
    failures: list[RuleFailure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        if self.success:
            return f"contract `{self.suite}`: all {self.rules_checked} rules hold"
        head = f"contract `{self.suite}` failed {len(self.failures)} of {self.rules_checked} rules:"
        return "\n".join([head, *(f.describe() for f in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "rules_checked": self.rules_checked, "success": self.success,
                "failures": [vars(f) for f in self.failures]}


class ContractViolation(RuntimeError):
    """Raised when data breaks a contract; nothing downstream may be written."""

    def __init__(self, reports: list[ContractReport]):
        self.reports = reports
        failed = [r for r in reports if not r.success]
        super().__init__("\n".join(r.describe() for r in failed))


class ContractChecker:
    """One Great Expectations context (ephemeral, offline) for the lifetime of a job."""

    def __init__(self) -> None:
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source = self._context.data_sources.add_spark("segue")

    def check(self, df: DataFrame, suite: str, id_columns: list[str]) -> ContractReport:
        """Validates `df` against the named suite; `id_columns` identify a row in the examples.

        A first pass only asks whether each rule holds (the cheap path every good run takes);
        counts and example rows are computed for the rules that failed.
        """
        expectations = SUITES[suite]()
        # GE persists the frame it checks; keep only what the rules and the examples read.
        df = df.select(*dict.fromkeys([*_columns_read(expectations), *id_columns]))
        verdicts = self._run(df, suite, expectations, {"result_format": "BOOLEAN_ONLY"})
        failed = [_fresh_copy(r.expectation_config) for r in verdicts if not r.success]
        failures = []
        if failed:
            details = self._run(df, f"{suite}_failures", failed,
                                {"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES,
                                 "unexpected_index_column_names": id_columns,
                                 "return_unexpected_index_query": False})
            failures = [_failure(r) for r in details]
        report = ContractReport(suite=suite, rules_checked=len(expectations), failures=failures)
        _LOGGER.info("contract checked", extra={"suite": suite, "rules": report.rules_checked,
                                                "failed": len(failures)})
        return report

    def _run(self, df: DataFrame, name: str, expectations: list, result_format: dict) -> list:
        gx_suite = self._context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = self._source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = self._context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=gx_suite))
        try:
            result = definition.run(batch_parameters={"dataframe": df}, result_format=result_format)
        finally:
            self._context.validation_definitions.delete(name)
            self._context.suites.delete(name)
            self._source.delete_asset(name)
        by_id = {r.expectation_config.id: r for r in result.results}
        return [by_id[e.id] for e in gx_suite.expectations]


def _columns_read(expectations: list[gxe.Expectation]) -> list[str]:
    columns: list[str] = []
    for e in expectations:
        for name in ("column", "column_A", "column_B"):
            if getattr(e, name, None):
                columns.append(getattr(e, name))
        columns.extend(getattr(e, "column_list", None) or [])
    return columns


def _fresh_copy(config: Any) -> gxe.Expectation:
    """The rule again, without the id its first suite gave it, for a second suite."""
    expectation = config.to_domain_obj()
    expectation.id = None
    return expectation


def _failure(result: Any) -> RuleFailure:
    config = result.expectation_config
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = result.exception_info.get("exception_message", "error")
        return RuleFailure(f"{config.description} (could not be evaluated: {message})", None, None, [])
    details = result.result or {}
    examples = details.get("partial_unexpected_index_list") or [
        {"value": v} for v in details.get("partial_unexpected_list", [])]
    return RuleFailure(
        rule=config.description or config.type,
        rows_affected=details.get("unexpected_count"),
        rows_checked=details.get("element_count"),
        examples=list(examples)[:_EXAMPLES],
    )
