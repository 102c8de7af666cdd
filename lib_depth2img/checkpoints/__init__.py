"""The SD2 depth checkpoint as a file: telling it from other checkpoints, finding it in model folders,
the YAML A1111 needs beside it, and downloading it.
"""
