"""Applications: the run pipeline, the paper figures and the command line, built on the stages below."""
