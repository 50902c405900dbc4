"""Names and fractions the data code and the command options share, in a module that imports nothing (the options
build `gptforge --help` without loading `datasets`)."""

TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
# What the default corpus and the splits carved from a training set hold out.
DEFAULT_VALIDATION_SPLIT = 0.1
