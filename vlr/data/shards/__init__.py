"""Web-scale data: image-text tar shards as img2dataset writes them (``data=shards``).

`index` finds every sample's members once (and caches it), `source` serves a split from
the index map-style, `write` turns any split vlr reads into shards
(``python -m vlr.data.shards data=<preset> out=<folder>``).
"""

from vlr.data.shards.index import BadSampleError, ShardIndex, build_index, expand_braces
from vlr.data.shards.source import ShardMember, ShardsSource
from vlr.data.shards.write import write_split

__all__ = ["BadSampleError", "ShardIndex", "ShardMember", "ShardsSource", "build_index", "expand_braces", "write_split"]
