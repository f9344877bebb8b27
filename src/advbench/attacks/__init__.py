"""Attack families: each turns the accepted studies of a shard into a derived release config."""
