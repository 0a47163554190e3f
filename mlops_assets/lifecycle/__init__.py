"""Plain, typed lifecycle logic: policy, metrics, statistics, registry moves and the store.

Nothing in this package imports Dagster or Ray; the assets and the server call into it.
"""

from mlops_assets.lifecycle.manager import ChampionChallengerManager

__all__ = ["ChampionChallengerManager"]
