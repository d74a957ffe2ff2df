"""Captions: the BLIP model, the thread that captions images in batches, and `htx recaption`."""
