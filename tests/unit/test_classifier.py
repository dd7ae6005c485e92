"""The failure classifier: every table row, table consistency, and properties (hypothesis)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery import rules
from recovery.classifier import (
    MAX_ADVISED_COOLDOWN_SECONDS,
    MAX_PENDING_WAIT_SECONDS,
    classify,
    normalise,
)
from recovery.models import Action, Category, Classification, ClassifyRequest
from recovery.rules import ADVICE_CODES, PSP_RULES, AdviceEffect, Outcome

PSPS = ("stripe", "razorpay", "simulator")
DAY = 24 * 3600


def c(psp: str = "stripe", **kw: object) -> Classification:
    return classify(ClassifyRequest(psp=psp, **kw))


def assert_outcome(out: Classification, outcome: Outcome, rule: str) -> None:
    assert (out.category, out.action, out.rule) == (outcome.category, outcome.action, rule)
    assert out.recommendation == outcome.recommendation


# ---- every row of every table -----------------------------------------------------------


def psp_rows() -> Iterator[tuple[str, str, str, Outcome, str]]:
    """(psp, field, key, outcome, rule id) for every row of every PSP's own tables."""
    for psp, r in PSP_RULES.items():
        for key, outcome in r.decline_codes.items():
            yield psp, "decline_code", key, outcome, f"{r.decline_rule_prefix}.{key}"
        for key, outcome in r.error_codes.items():
            yield psp, "code", key, outcome, f"{r.code_rule_prefix}.{key}"
        for key, outcome in r.generic_codes.items():
            yield psp, "code", key, outcome, f"{r.code_rule_prefix}.{key}"


@pytest.mark.parametrize(("psp", "field", "key", "outcome", "rule"), list(psp_rows()))
def test_every_psp_table_row(psp: str, field: str, key: str, outcome: Outcome, rule: str) -> None:
    assert_outcome(c(psp, **{field: key}), outcome, rule)
    # PSPs send codes in any case and with stray whitespace (Razorpay's are upper case)
    assert_outcome(c(psp, **{field: f"  {key.upper()} "}), outcome, rule)


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize(
    ("table", "prefix"), [(rules.PENDING_CODES, "pending"), (rules.WORKFLOW_CODES, "workflow")]
)
def test_shared_status_rows_outrank_everything(
    psp: str, table: Mapping[str, Outcome], prefix: str
) -> None:
    for key, outcome in table.items():
        for field in ("code", "decline_code"):
            assert_outcome(c(psp, **{field: key}), outcome, f"{prefix}.{key}")
        # even next to a code that would retry
        out = c(psp, code=key, decline_code="insufficient_funds", message="declined")
        assert_outcome(out, outcome, f"{prefix}.{key}")


@pytest.mark.parametrize("psp", PSPS)
def test_transport_rows(psp: str) -> None:
    own = PSP_RULES[psp]
    for key, outcome in rules.TRANSPORT_CODES.items():
        out = c(psp, code=key)
        if key in own.decline_codes or key in own.error_codes:
            assert (out.category, out.action) == (outcome.category, outcome.action)
        else:
            assert_outcome(out, outcome, f"network.{key}")
    for row in rules.TRANSPORT_PATTERNS:
        assert_outcome(c(psp, code=row.example), row.outcome, f"network.{row.name}")
    for status in ("http_500", "HTTP-503", "504", "http_429", "408"):
        assert c(psp, code=status).category is Category.NETWORK


@pytest.mark.parametrize("psp", PSPS)
def test_every_message_pattern_decides_its_own_example(psp: str) -> None:
    for row in rules.MESSAGE_PATTERNS:
        assert_outcome(c(psp, message=row.example), row.outcome, f"message.{row.name}")
        assert_outcome(
            c(psp, message=row.example.upper(), code="zz_unknown"),
            row.outcome,
            f"message.{row.name}",
        )


@pytest.mark.parametrize(
    ("message", "category", "action"),
    [
        ("Request TIMED OUT at gateway", Category.NETWORK, Action.RETRY),
        ("Your card has insufficient funds.", Category.FUNDS, Action.RETRY),
        ("Your card was declined because it was reported stolen", Category.ISSUER_DECLINE,
         Action.CUSTOMER_ACTION),
        ("UPI collect request expired", Category.AUTH_TIMEOUT, Action.CUSTOMER_ACTION),
        ("Payment is pending with the bank", Category.UPI_PENDING, Action.AWAIT_STATUS),
        ("The pending payment did not complete", Category.UNKNOWN, Action.RETRY),
        ("lost connection to the server", Category.UNKNOWN, Action.RETRY),
        ("something odd happened", Category.UNKNOWN, Action.RETRY),
    ],
)  # fmt: skip
def test_message_fallback(message: str, category: Category, action: Action) -> None:
    out = c("razorpay", code="BAD_REQUEST_ERROR", message=message)
    assert (out.category, out.action) == (category, action)


def test_a_decline_code_decides_before_the_generic_code_and_the_message() -> None:
    out = c(code="card_declined", decline_code="stolen_card", message="Your card was declined.")
    assert out.rule == "stripe.decline_code.stolen_card"
    assert c(code="card_declined", message="insufficient funds").rule == (
        "message.insufficient_funds"
    )
    assert c(code="card_declined").rule == "stripe.code.card_declined"
    assert c(code="card_declined", decline_code="zz_new_code").category is (Category.ISSUER_DECLINE)
    assert c("razorpay", code="GATEWAY_ERROR", decline_code="PAYMENT_TIMED_OUT").rule == (
        "razorpay.reason.payment_timed_out"
    )


# ---- the tables never contradict themselves ---------------------------------------------


def test_no_code_has_contradictory_outcomes_within_a_psp() -> None:
    """Every table one classification may consult (shared and the PSP's own) agrees on a key."""
    for psp, r in PSP_RULES.items():
        tables: dict[str, Mapping[str, Outcome]] = {
            "pending": rules.PENDING_CODES,
            "workflow": rules.WORKFLOW_CODES,
            "transport": rules.TRANSPORT_CODES,
            "decline": r.decline_codes,
            "error": r.error_codes,
            "generic": r.generic_codes,
        }
        seen: dict[str, tuple[str, Outcome]] = {}
        for name, table in tables.items():
            for key, outcome in table.items():
                assert normalise(key) == key, f"{name}.{key} is not a normalised key"
                if key in seen:
                    other, prev = seen[key]
                    assert (prev.category, prev.action) == (outcome.category, outcome.action), (
                        f"{psp}: {key} is {prev.kind} in {other} but {outcome.kind} in {name}"
                    )
                else:
                    seen[key] = (name, outcome)
        for key in rules.PENDING_CODES:
            assert key not in r.decline_codes and key not in r.error_codes


def test_no_code_is_both_a_specific_and_a_generic_code() -> None:
    for r in PSP_RULES.values():
        assert not set(r.error_codes) & set(r.generic_codes)


def test_table_sizes() -> None:
    """Guards against a table silently shrinking (counts from the providers' pages)."""
    assert len(rules.STRIPE_DECLINE_CODES) == 50 + 12  # card codes + local payment method codes
    assert len(rules.RAZORPAY_REASONS) >= 100
    assert len(rules.RAZORPAY_CODES) == 3
    assert len(rules.MESSAGE_PATTERNS) == len({r.name for r in rules.MESSAGE_PATTERNS})


def test_every_outcome_has_a_recommendation_and_a_sane_cooldown() -> None:
    for o in rules.OUTCOMES:
        assert o.recommendation.endswith(".") and len(o.recommendation) > 30
        assert 0 <= o.base_cooldown_seconds <= o.max_cooldown_seconds
        if o.action in (Action.CUSTOMER_ACTION, Action.STOP):
            assert o.base_cooldown_seconds == 0
        if o.action is Action.AWAIT_STATUS:
            assert 0 < o.base_cooldown_seconds <= MAX_PENDING_WAIT_SECONDS


# ---- card-network advice ----------------------------------------------------------------


@pytest.mark.parametrize("key", list(ADVICE_CODES))
def test_every_advice_row(key: str) -> None:
    advice = ADVICE_CODES[key]
    base = c(code="processing_error")  # a network retry after 5 minutes
    out = c(code="processing_error", network_advice_code=f" {key.upper()} ")
    assert out.category is base.category
    if advice.effect is AdviceEffect.STOP:
        assert (out.action, out.retryable, out.rule) == (Action.STOP, False, f"advice.{key}")
    elif advice.effect is AdviceEffect.NEW_DETAILS:
        assert (out.action, out.rule) == (Action.CUSTOMER_ACTION, f"advice.{key}")
        assert out.alternate_methods
    elif advice.effect is AdviceEffect.WAIT and advice.wait_seconds > base.cooldown_seconds:
        assert (out.action, out.rule) == (Action.RETRY, f"advice.{key}")
        assert out.cooldown_seconds == advice.wait_seconds
    else:  # informational, or a wait shorter than the planned one
        assert out == base
    if out != base:
        assert advice.description in out.recommendation


@pytest.mark.parametrize("advice", [k for k, a in ADVICE_CODES.items() if a.effect == "stop"])
def test_do_not_try_again_advice_stops_whatever_the_decline_code(advice: str) -> None:
    for psp, r in PSP_RULES.items():
        for key in (*r.decline_codes, *rules.PENDING_CODES, "zz_never_heard_of_it"):
            base = c(psp, decline_code=key)
            out = c(psp, decline_code=key, network_advice_code=advice)
            assert (out.action, out.retryable, out.cooldown_seconds) == (Action.STOP, False, 0)
            assert out.category is base.category  # the codes still say what went wrong
            assert out.rule == f"advice.{advice}"


def test_advice_never_turns_a_customer_action_or_a_wait_into_a_retry() -> None:
    for advice in ADVICE_CODES:
        if ADVICE_CODES[advice].effect is AdviceEffect.STOP:
            continue
        for key in ("stolen_card", "authentication_required", "payment_pending"):
            base = c(decline_code=key)
            assert c(decline_code=key, network_advice_code=advice).action is base.action


def test_retry_after_advice_stretches_only_shorter_cooldowns() -> None:
    funds = c(decline_code="insufficient_funds", attempt=3)  # 4 days
    assert c(decline_code="insufficient_funds", attempt=3, network_advice_code="25") == funds
    later = c(decline_code="insufficient_funds", attempt=3, network_advice_code="30")
    assert later.cooldown_seconds == 10 * DAY and later.rule == "advice.30"
    assert later.category is Category.FUNDS


def test_unknown_advice_is_ignored() -> None:
    assert c(decline_code="do_not_honor", network_advice_code="99") == c(
        decline_code="do_not_honor"
    )


# ---- the behaviours the workflow relies on ----------------------------------------------


@pytest.mark.parametrize("psp", ["stripe", "simulator"])
def test_workflow_constraints(psp: str) -> None:
    funds = c(psp, code="card_declined", decline_code="insufficient_funds")
    assert (funds.category, funds.action) == (Category.FUNDS, Action.RETRY)
    assert funds.cooldown_seconds >= DAY
    assert c(psp, decline_code="stolen_card").action is Action.CUSTOMER_ACTION
    pending = c(psp, decline_code="payment_pending")
    assert (pending.category, pending.action) == (Category.UPI_PENDING, Action.AWAIT_STATUS)
    assert c(psp, code="payment_pending").action is Action.AWAIT_STATUS  # a charge "processing"
    unknown = c(psp, code="zz_never_heard_of_it")
    assert (unknown.category, unknown.action, unknown.rule) == (
        Category.UNKNOWN,
        Action.RETRY,
        "fallback.unknown",
    )
    assert c(psp, code="processing_error").category is Category.NETWORK
    auth = c(psp, code="authentication_required")
    assert (auth.category, auth.action) == (Category.AUTH_TIMEOUT, Action.CUSTOMER_ACTION)
    # the workflow's own "pending payment did not complete" is not pending any more
    expired = c(psp, code="payment_pending_expired", message="pending payment did not complete")
    assert (expired.category, expired.action) == (Category.UNKNOWN, Action.RETRY)
    assert expired.cooldown_seconds >= DAY and expired.rule == "workflow.payment_pending_expired"
    assert c(psp, code="unknown").rule == "fallback.unknown"


@pytest.mark.parametrize(
    "code",
    [
        "lost_card", "stolen_card", "pickup_card", "fraudulent", "restricted_card",
        "invalid_account", "incorrect_number", "invalid_number", "expired_card",
        "card_not_supported", "transaction_not_allowed", "do_not_try_again",
    ],
)  # fmt: skip
def test_hard_declines_ask_the_customer_and_suggest_alternatives(code: str) -> None:
    for psp in ("stripe", "simulator"):  # Razorpay has its own reasons, checked below
        out = c(psp, code="card_declined", decline_code=code)
        assert out.category is Category.ISSUER_DECLINE
        assert out.action is Action.CUSTOMER_ACTION and not out.retryable
        assert out.alternate_methods


@pytest.mark.parametrize(
    "reason",
    [
        "card_expired",
        "card_number_invalid",
        "debit_instrument_blocked",
        "payment_risk_check_failed",
    ],
)
def test_razorpay_hard_declines(reason: str) -> None:
    out = c("razorpay", code="BAD_REQUEST_ERROR", decline_code=reason.upper())
    assert out.action is Action.CUSTOMER_ACTION
    assert out.alternate_methods and set(out.alternate_methods) <= {"card", "upi", "netbanking"}


def test_upi_collect_pending_awaits_and_expired_does_not() -> None:
    pending = c("razorpay", code="BAD_REQUEST_ERROR", decline_code="collect_request_pending")
    assert (pending.category, pending.action) == (Category.UPI_PENDING, Action.AWAIT_STATUS)
    assert pending.rule == "pending.collect_request_pending" and pending.cooldown_seconds > 0
    for reason in ("payment_collect_request_expired", "payment_declined", "PAYMENT_CANCELLED"):
        out = c("razorpay", code="BAD_REQUEST_ERROR", decline_code=reason)
        assert out.category is not Category.UPI_PENDING
        assert out.action is not Action.AWAIT_STATUS


def test_razorpay_upper_case_codes_and_reasons() -> None:
    assert c("razorpay", code="GATEWAY_ERROR").rule == "razorpay.code.gateway_error"
    assert c("razorpay", code="SERVER_ERROR").category is Category.NETWORK
    assert c("razorpay", code="BAD_REQUEST_ERROR").rule == "razorpay.code.bad_request_error"
    out = c("razorpay", code="BAD_REQUEST_ERROR", decline_code="INSUFFICIENT_FUNDS")
    assert (out.category, out.rule) == (Category.FUNDS, "razorpay.reason.insufficient_funds")
    assert c("razorpay", decline_code="Payment Timed-Out").rule == (
        "razorpay.reason.payment_timed_out"
    )
    assert c("razorpay", decline_code="bank_technical_error").category is Category.NETWORK


def test_cooldowns_grow_per_kind() -> None:
    network = [c(code="processing_error", attempt=n).cooldown_seconds for n in (1, 2, 3, 50)]
    assert network[0] == 300 and network[0] < network[1] < network[2] <= network[3] <= 2 * 3600
    funds = [c(decline_code="insufficient_funds", attempt=n).cooldown_seconds for n in (1, 2, 3)]
    assert funds == [DAY, 2 * DAY, 4 * DAY]
    assert c(decline_code="insufficient_funds", attempt=1000).cooldown_seconds == 7 * DAY
    assert c(code="card_decline_rate_limit_exceeded").cooldown_seconds >= DAY
    assert c(code="zz", attempt=0).cooldown_seconds == c(code="zz", attempt=1).cooldown_seconds


def test_alternate_methods_are_what_the_psp_offers() -> None:
    assert set(c("stripe", decline_code="lost_card").alternate_methods) <= {"card", "bank_transfer"}
    assert "upi" in c("razorpay", decline_code="debit_instrument_blocked").alternate_methods


# ---- properties -------------------------------------------------------------------------


def _known_keys() -> list[str]:
    keys: set[str] = set(ADVICE_CODES) | set(rules.TRANSPORT_CODES) | set(rules.PENDING_CODES)
    for r in PSP_RULES.values():
        keys |= set(r.decline_codes) | set(r.error_codes) | set(r.generic_codes)
    return sorted(keys)


KNOWN = _known_keys()
fields = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN).map(str.upper),
    st.sampled_from([r.example for r in rules.MESSAGE_PATTERNS]),
)
requests = st.builds(
    ClassifyRequest,
    psp=st.sampled_from(PSPS),
    code=fields,
    decline_code=fields,
    message=st.one_of(fields, st.text(max_size=300)),
    payment_method_type=st.one_of(st.none(), st.sampled_from(["card", "upi"]), st.text()),
    network_advice_code=fields,
    attempt=st.integers(1, 1000),
)


def _rule_ids() -> set[str]:
    ids = {"fallback.unknown"}
    ids |= {f"advice.{k}" for k in ADVICE_CODES}
    ids |= {f"pending.{k}" for k in rules.PENDING_CODES}
    ids |= {f"workflow.{k}" for k in rules.WORKFLOW_CODES}
    ids |= {f"network.{k}" for k in rules.TRANSPORT_CODES}
    ids |= {f"network.{r.name}" for r in rules.TRANSPORT_PATTERNS}
    ids |= {f"message.{r.name}" for r in rules.MESSAGE_PATTERNS}
    for _, _, _, _, rule in psp_rows():
        ids.add(rule)
    return ids


RULE_IDS = _rule_ids()


@settings(max_examples=500)
@given(requests)
def test_classify_is_total_and_deterministic(req: ClassifyRequest) -> None:
    out = classify(req)
    assert isinstance(out, Classification)
    Classification.model_validate(out.model_dump())
    assert out == classify(req.model_copy())
    assert out.rule in RULE_IDS  # a rule id never echoes arbitrary input
    assert out.recommendation
    waits = out.action is Action.AWAIT_STATUS  # a pending payment: no charge at its end
    cap = MAX_PENDING_WAIT_SECONDS if waits else MAX_ADVISED_COOLDOWN_SECONDS
    assert 0 <= out.cooldown_seconds <= cap
    assert out.retryable == (out.action in (Action.RETRY, Action.AWAIT_STATUS))
    if out.action in (Action.CUSTOMER_ACTION, Action.STOP):
        assert out.cooldown_seconds == 0
    else:
        assert out.cooldown_seconds > 0


@settings(max_examples=300)
@given(requests, st.integers(1, 1000), st.integers(1, 1000))
def test_retry_cooldowns_are_monotone_in_attempt_and_capped(
    req: ClassifyRequest, a: int, b: int
) -> None:
    lo, hi = sorted((a, b))
    first = classify(req.model_copy(update={"attempt": lo}))
    later = classify(req.model_copy(update={"attempt": hi}))
    assert (first.action, first.category) == (later.action, later.category)
    if first.rule != later.rule:  # "retry after N" advice decides only while it is longer
        assert first.rule.startswith("advice.") and req.network_advice_code
    if first.action is Action.RETRY:
        assert first.cooldown_seconds <= later.cooldown_seconds <= MAX_ADVISED_COOLDOWN_SECONDS
        if not first.rule.startswith("advice."):
            assert later.cooldown_seconds <= 7 * DAY
