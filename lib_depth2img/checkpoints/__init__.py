"""The SD2 depth checkpoint as a file: reading checkpoint files (the one reader), telling the depth
model from other checkpoints, finding it in model folders, the YAML A1111 needs beside it, and
downloading it.
"""
