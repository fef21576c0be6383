"""Making fine-tunes: LoRA adapters by the exact policy gradient on real weights (`rl`), the
embedded demo family (`demo`), and the check that an adapter decides by the game, straight
from the model (`behaviour_check`). Importing the package imports nothing."""
