"""Display names of the built-in models, importable without torch (the report needs only these).

`hamgraph.models` re-exports `MODEL_DISPLAY`; this is its one definition.
"""

from __future__ import annotations

MODEL_DISPLAY: dict[str, str] = {"gcn": "GCN", "gat": "GAT", "sage": "SAGE", "gcnplus": "GCN+"}
