"""Knobs of the link pipeline: the spider (``lark-spider``) and the links cron (``lark-links``).

Declared here, below both programs, so that :func:`lark.config.all_knobs` can list them without
importing either (the spider's package imports :mod:`lark.config`); :mod:`lark.links.cron` and
:mod:`perfsonar.config` read their knobs from these declarations. Defaults are the built-in values
the programs use when a knob is not set (``condor_config.d/70-lark-matchmaking.conf`` sets most
of them explicitly).
"""

from __future__ import annotations

from lark.knobs import Knob
from lark.values import parse_bool, parse_float, parse_int, parse_text

CRON = "lark-links"
SPIDER = "lark-spider"


def parse_policy(text: str) -> bool:
    """LARK_UNKNOWN_LINK_POLICY: True for allow (a boolean is read like any other boolean knob)."""
    low = text.strip().lower()
    if low in ("allow", "deny"):
        return low == "allow"
    try:
        return parse_bool(text)
    except ValueError:
        raise ValueError(f"expected allow or deny, got {text!r}") from None


def parse_spider_value(text: str) -> int | str:
    """A LARK_SPIDER_* value as the YAML key it overrides would hold it (the YAML checker validates it)."""
    try:
        return int(text)
    except ValueError:
        return text.strip()


# The circuit breaker (lark.links.records.BreakerKnobs), field by field
MAX_TRANSFER_SECONDS = Knob("LARK_MAX_TRANSFER_SECONDS", "3600", lambda t: parse_float(t, 0, 1e9),
                            "A link whose transfer of the job's input would take longer is not used.", CRON)
# at most 18 digits, as the schedd's LarkLink transform accepts (both sides must read one value)
SMALL_INPUT_BYTES = Knob("LARK_SMALL_INPUT_BYTES", "1073741824", lambda t: parse_int(t, 0, 10**18 - 1),
                         "Input below this size always passes (bytes).", CRON)
MAX_LOSS = Knob("LARK_MAX_LOSS", "0.02", lambda t: parse_float(t, 0, 1), "Packet loss above which a link is "
                "broken (fraction).", CRON)
MAX_LINK_AGE = Knob("LARK_MAX_LINK_AGE", "86400", lambda t: parse_float(t, 0, 1e10),
                    "Seconds after which a measurement is too old to judge a link by.", CRON)
UNKNOWN_LINK_POLICY = Knob("LARK_UNKNOWN_LINK_POLICY", "allow", parse_policy,
                           "allow or deny jobs over a link nobody measured.", CRON)
LINKS_PUBLISH_RECORD = Knob("LARK_LINKS_PUBLISH_RECORD", "False", parse_bool,
                            "Also publish the measurements as a nested record (LarkLinks) for people.", CRON)
LINKS_MAX_SITES = Knob("LARK_LINKS_MAX_SITES", "500", lambda t: parse_int(t, 1, 100000),
                       "Most remote sites one slot ad carries limits for.", CRON)

# knob -> BreakerKnobs field
BREAKER_FIELDS: dict[Knob[object], str] = {
    MAX_TRANSFER_SECONDS: "max_transfer_seconds", SMALL_INPUT_BYTES: "small_input_bytes", MAX_LOSS: "max_loss",
    MAX_LINK_AGE: "max_link_age", UNKNOWN_LINK_POLICY: "unknown_link_allowed",
    LINKS_PUBLISH_RECORD: "publish_record", LINKS_MAX_SITES: "max_sites",
}
SITE = Knob("LARK_SITE", "", parse_text, "This node's site (else GLIDEIN_Site); the links cron publishes the "
            "limits of links towards it, the submit side names jobs' input sites by it.", CRON)
LINKS_CACHE = Knob("LARK_LINKS_CACHE", "", parse_text, "Where the links cron keeps its last good knobs and "
                   "links (empty: $(SPOOL)/lark-links.json).", CRON)

# The spider: each knob overrides one key of its YAML file (perfsonar.config)
SPIDER_CONFIG = Knob("LARK_SPIDER_CONFIG", "/etc/lark/spider.yaml", parse_text,
                     "Path of the spider's YAML configuration file.", SPIDER)
SPIDER_OVERRIDES: dict[Knob[object], tuple[str, str]] = {
    Knob("LARK_SPIDER_INTERVAL", "", parse_spider_value, "Seconds between crawls (overrides spider.interval).",
         SPIDER): ("spider", "interval"),
    Knob("LARK_SPIDER_LOG", "", parse_spider_value, "The spider's log file, HTCondor line format "
         "(overrides spider.log).", SPIDER): ("spider", "log"),
    Knob("LARK_SPIDER_STATE_FILE", "", parse_spider_value, "Where the last good link values are kept "
         "(overrides spider.state_file).", SPIDER): ("spider", "state_file"),
    Knob("LARK_SPIDER_COLLECTOR", "", parse_spider_value, "Collector host[:port] to advertise to "
         "(overrides collector.address).", SPIDER): ("collector", "address"),
    Knob("LARK_SPIDER_TOKEN_DIR", "", parse_spider_value, "IDTOKENS directory of the spider "
         "(overrides collector.token_dir).", SPIDER): ("collector", "token_dir"),
    Knob("LARK_SPIDER_METRICS_ADDRESS", "", parse_spider_value, "HOST:PORT of the spider's Prometheus endpoint "
         "(overrides spider.metrics_address).", SPIDER): ("spider", "metrics_address"),
    Knob("LARK_SPIDER_METRICS_TEXTFILE", "", parse_spider_value, "File the spider rewrites with its metrics "
         "after each crawl (overrides spider.metrics_textfile).", SPIDER): ("spider", "metrics_textfile"),
}
SPIDER_DAEMON = Knob("LARK_SPIDER", "", parse_text, "The spider's executable, for the central manager's "
                     "DAEMON_LIST (80-lark-central-manager.conf).", SPIDER)

KNOBS: tuple[Knob[object], ...] = (*BREAKER_FIELDS, SITE, LINKS_CACHE, SPIDER_CONFIG, *SPIDER_OVERRIDES,
                                   SPIDER_DAEMON)
