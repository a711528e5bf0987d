"""Published evaluation protocols: presets, class subsets, splits and training settings of a paper, by name.

``get_protocol("craft-paper")`` is the CRAFT paper's protocol (``--protocol craft-paper`` on the CLI);
see docs/protocol.md for each field and the paper section it comes from.
"""

from clinalign.protocols.base import (
    DatasetProtocol,
    ProbeProtocol,
    Protocol,
    ScoringProtocol,
    SubsetDesign,
    available_protocols,
    get_protocol,
    register_protocol,
)
from clinalign.protocols.prepare import PreparedData, prepare_records

__all__ = [
    "DatasetProtocol",
    "PreparedData",
    "ProbeProtocol",
    "Protocol",
    "ScoringProtocol",
    "SubsetDesign",
    "available_protocols",
    "get_protocol",
    "prepare_records",
    "register_protocol",
]
