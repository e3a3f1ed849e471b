"""vlr's Hydra configs (a package, so Hydra finds them as ``pkg://vlr.conf`` when an entry point's
``main`` is called in-process, as the tests do)."""
