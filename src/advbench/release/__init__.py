"""Writing a release: Parquet shards in the Hugging Face layout, the card and the manifest."""
