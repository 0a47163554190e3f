"""Plain, typed lifecycle logic: policy, metrics, statistics, registry moves and the store.

Nothing in this package imports Dagster or Ray; the assets and the server call into it. The
caller opens one `Lifecycle` (settings, MLflow client, store) and passes it to the functions.
"""

from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.manager import ChampionChallengerManager

__all__ = ["ChampionChallengerManager", "Lifecycle"]
