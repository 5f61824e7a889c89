"""What a run keeps on disk: atomic writes, the content-addressed network cache, the keys of cached
networks and records, and the records themselves."""
