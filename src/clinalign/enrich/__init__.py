"""Stage 1 of CRAFT: label-conditioned enriched prompts ``t_ep`` and class checklists ``t_c`` from an MLLM.

``openai`` is imported only when a request is made, so importing this package stays light.

Example::

    from clinalign.data import load_dataset
    from clinalign.enrich import EnrichConfig, enrich, get_preset

    data = load_dataset("chexpert", "data/chexpert", uncertain="exclude")
    result = enrich(data.records, get_preset("chexpert"), EnrichConfig(model="gpt-4o-mini"), "out/enrich")
    print(result.summary_table())
"""

from clinalign.enrich.batch import BatchOptions, enrich_batch, export_requests, import_output
from clinalign.enrich.checklists import ChecklistResult, builtin_checklists, generate_checklists
from clinalign.enrich.client import ChatClient, EndpointError, RequestFailed, ask_validated
from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.parsing import JSONExtractError, extract_json
from clinalign.enrich.presets import (
    Preset,
    PresetSpec,
    available_presets,
    get_preset,
    load_preset_file,
    register_preset,
)
from clinalign.enrich.pricing import Usage, cost_line
from clinalign.enrich.render import approx_token_count
from clinalign.enrich.runner import (
    ENRICHED_FILE,
    FAILURES_FILE,
    EnrichResult,
    aenrich,
    build_request,
    dry_run,
    enrich,
)

__all__ = [
    "ENRICHED_FILE",
    "FAILURES_FILE",
    "BatchOptions",
    "ChatClient",
    "ChecklistResult",
    "EndpointError",
    "EnrichConfig",
    "EnrichResult",
    "JSONExtractError",
    "Preset",
    "PresetSpec",
    "RequestFailed",
    "Usage",
    "aenrich",
    "approx_token_count",
    "ask_validated",
    "available_presets",
    "build_request",
    "builtin_checklists",
    "cost_line",
    "dry_run",
    "enrich",
    "enrich_batch",
    "export_requests",
    "extract_json",
    "generate_checklists",
    "get_preset",
    "import_output",
    "load_preset_file",
    "register_preset",
]
