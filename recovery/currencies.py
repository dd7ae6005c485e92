"""ISO-4217 currencies we accept, with the number of digits in their minor unit."""

from decimal import Decimal

# Active ISO-4217 codes (lower case) -> minor-unit exponent.
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        "aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bmd bnd bob brl bsd btn bwp "
        "byn bzd cad cdf chf cny cop crc cup cve czk dkk dop dzd egp ern etb eur fjd fkp gbp "
        "gel ghs gip gmd gtq gyd hkd hnl htg huf idr ils inr irr jmd kes kgs khr kpw kyd kzt "
        "lak lbp lkr lrd lsl mad mdl mkd mmk mnt mop mru mur mvr mwk mxn myr mzn nad ngn nio "
        "nok npr nzd pab pen pgk php pkr pln qar ron rsd rub sar sbd scr sdg sek sgd shp sle "
        "sos srd ssp stn svc syp szl thb tjs tmt top try ttd twd tzs uah usd uyu uzs ves wst "
        "xcd yer zar zmw zwg".split(),
        2,
    ),
    **dict.fromkeys(
        "bif clp djf gnf isk jpy kmf krw pyg rwf ugx uyi vnd vuv xaf xof xpf".split(), 0
    ),
    **dict.fromkeys("bhd iqd jod kwd lyd omr tnd".split(), 3),
}


def is_known_currency(code: str) -> bool:
    return code in MINOR_UNITS


def format_amount(amount: int, currency: str) -> str:
    """An amount in minor units as a person reads it: `format_amount(4999, "usd")` is
    "49.99 USD", `format_amount(5000, "jpy")` is "5,000 JPY" (exact: no float)."""
    exponent = MINOR_UNITS.get(currency, 2)
    value = Decimal(amount).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency.upper()}"
