"""From records to answers: the leaderboard's statistics, its tables and files, the terminal view,
plots, the papers' published figures and the comparison with a committed reference."""
