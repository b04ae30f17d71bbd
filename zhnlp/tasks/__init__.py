"""What is trained and evaluated: pretraining, the CLUE classifier and TF-IDF baseline, the generation heads, predictions, CAN and the leaderboard."""
