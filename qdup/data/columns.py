"""The Quora release's TSV columns, in a module without imports so that the CLI checks a file's header at once."""

COLUMNS = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
INT_COLUMNS = ["id", "qid1", "qid2", "is_duplicate"]
TEXT_COLUMNS = ["question1", "question2"]
