"""Domain exceptions of the shared core: a machine code plus the Rasa response key that tells the customer."""

from __future__ import annotations

from typing import Any


class BankError(Exception):
    """A domain failure. `code` is snake_case and stable; `message_key` names a Rasa response."""

    default_code = "bank_error"

    def __init__(self, code: str | None = None, message_key: str | None = None, **details: Any) -> None:
        self.code = code or self.default_code
        # Every code has a response of the same name so actions need no mapping table.
        self.message_key = message_key or f"utter_error_{self.code}"
        self.details = details
        super().__init__(f"{self.code} {details}" if details else self.code)


class NotFoundError(BankError):
    """customer_not_found, account_not_found, card_not_found, transfer_not_found, loan_not_found, ..."""

    default_code = "not_found"


class InvalidAmountError(BankError):
    default_code = "invalid_amount"


class TransferRejected(BankError):
    """A transfer that cannot be prepared: unknown_payee, self_transfer, limits, funds, frozen account."""

    default_code = "transfer_rejected"


class InvalidStateError(BankError):
    """The object is not in a state that allows the operation (e.g. executing an unverified transfer)."""

    default_code = "invalid_state"


class CardError(BankError):
    """card_already_active, card_not_activatable, card_ambiguous, card_already_replaced."""

    default_code = "card_error"


class RepaymentRejected(BankError):
    """nothing_to_repay, repayment_exceeds_balance, no_instalment_due, invalid_repayment_mode."""

    default_code = "repayment_rejected"


class UnknownCurrencyError(BankError):
    default_code = "unknown_currency"


class ConcurrencyError(BankError):
    """A guarded update lost a race; the unit of work must be rolled back and may be retried."""

    default_code = "concurrent_update"


class SandboxFormatError(BankError):
    """A malformed sandbox document; `path` names the bad field, e.g. customers[0].accounts[1].balance."""

    default_code = "sandbox_format"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path=path, problem=problem)
        self.path = path
        self.problem = problem
        self.args = (f"{path}: {problem}",)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
