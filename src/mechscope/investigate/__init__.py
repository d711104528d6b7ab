"""The engine of ``mechscope investigate``: a validated TOML config and a resumable stage runner.

The stages themselves and the command are not built yet; see ``docs/investigate.md``.
This package imports only mechscope's shared leaf modules (``errors``, ``_fs``, ``_version``).
"""

from __future__ import annotations

from .config import (
    STAGE_INPUTS,
    STAGE_NAMES,
    BehaviourSection,
    BudgetSection,
    ConfigError,
    CorpusSection,
    InvestigationConfig,
    ModelSection,
    StageSection,
    StagesSection,
    from_flags,
    load_config,
    parse_config,
    section_hash,
    to_toml,
)
from .runner import (
    RunnerError,
    RunReport,
    Stage,
    StageContext,
    StageRecord,
    format_table,
    input_hash,
    print_progress,
    read_stage_json,
    run_stages,
)

__all__ = [
    "STAGE_INPUTS",
    "STAGE_NAMES",
    "BehaviourSection",
    "BudgetSection",
    "ConfigError",
    "CorpusSection",
    "InvestigationConfig",
    "ModelSection",
    "RunReport",
    "RunnerError",
    "Stage",
    "StageContext",
    "StageRecord",
    "StageSection",
    "StagesSection",
    "format_table",
    "from_flags",
    "input_hash",
    "load_config",
    "parse_config",
    "print_progress",
    "read_stage_json",
    "run_stages",
    "section_hash",
    "to_toml",
]
