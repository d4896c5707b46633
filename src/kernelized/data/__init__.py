"""Task data: MQAR, ListOps, Pathfinder, byte text, LM corpora and tokenizers. Import submodules directly."""
