"""Data contracts (Great Expectations 1.x suites) that the batch jobs enforce before writing."""

from segue.batch.contracts.check import ContractChecker, ContractReport, ContractViolation
from segue.batch.contracts.suites import SUITES

__all__ = ["ContractChecker", "ContractReport", "ContractViolation", "SUITES"]
