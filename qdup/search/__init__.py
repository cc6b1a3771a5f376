"""Finding duplicates of questions: a question index, nearest-neighbour search, paraphrase mining, retrieval evaluation."""
