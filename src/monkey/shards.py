"""Which shard of the plan this process works on."""

from omegaconf import DictConfig

from monkey.errors import ConfigError


def resolve_shard(cfg: DictConfig) -> tuple[int, int]:
    shard, num_shards = cfg.get("shard", 0), cfg.get("num_shards", 1)
    if not isinstance(shard, int) or not isinstance(num_shards, int):
        raise ConfigError(f"shard={shard!r} and num_shards={num_shards!r} must be integers")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} must lie in [0, num_shards={num_shards})")
    return shard, num_shards
