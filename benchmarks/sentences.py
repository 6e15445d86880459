"""Sentences for benchmarks/task_quality.py: templated everyday sentences to calibrate on, and
held-out sentences written unlike them (other topics, lengths, punctuation); how they are
encoded, embedded and compared (top-5 neighbours)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIB_SUBJECTS = ("the cat", "my brother", "a little girl", "the old man", "our neighbour",
                  "the teacher", "a dog", "my friend", "the baker", "the children")
CALIB_VERBS = ("walks to", "looks at", "sits near", "cleans", "paints", "visits", "finds",
               "opens", "likes", "waits by")
CALIB_OBJECTS = ("the garden", "the kitchen door", "a red chair", "the market", "the river",
                 "a small house", "the bakery", "the window", "the park", "a wooden table")
CALIB_TAILS = ("every morning", "after lunch", "on sunday", "in the rain", "with a smile", "")

HELDOUT = [
    "Quarterly revenue rose 12% to $4.1bn, beating analysts' forecasts.",
    "The central bank held interest rates at 5.25 percent for a third meeting.",
    "Shares of the chipmaker slumped after it cut its full-year guidance.",
    "Inflation eased in March, but core prices remain stubbornly high.",
    "How do I reset my router's admin password?",
    "Kubernetes schedules pods onto nodes based on resource requests and limits.",
    "The compiler inlines small functions and unrolls loops when it can prove the bounds.",
    "A segmentation fault usually means the program touched memory it does not own.",
    "Use a virtual environment so your project's dependencies stay isolated.",
    "Patients with type 2 diabetes were randomized to metformin or placebo.",
    "The vaccine reduced hospital admissions by roughly two thirds.",
    "Symptoms include fever, a dry cough, fatigue and loss of taste or smell.",
    "Take one tablet twice daily with food; do not exceed the stated dose.",
    "The striker scored twice in the final ten minutes to win the cup.",
    "After 42 km, she crossed the line in 2:19:48, a new course record.",
    "The referee's decision sparked a furious debate among the fans.",
    "Tennis: Nadal vs. Djokovic, semi-final, Court Philippe-Chatrier.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Black holes form when massive stars collapse under their own gravity.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War.",
    "Plate tectonics explains earthquakes, volcanoes and the drift of continents.",
    "WARNING: HIGH VOLTAGE - AUTHORISED PERSONNEL ONLY",
    "Why is the sky blue?",
    "Delicious!",
    "Preheat the oven to 180 C, then bake the bread for 35 minutes.",
    "Whisk two eggs with milk, pour into a hot pan, and stir gently.",
    "Flight LH 441 to Frankfurt is delayed until 21:40; please check gate B12.",
    "The hotel offers free Wi-Fi, a rooftop pool and a 24-hour gym.",
    "Terms and conditions apply; offer valid while stocks last.",
    "\"I'll be there by noon,\" she said, \"unless the trains are on strike again.\"",
    "Despite the storm - which had knocked out power across the valley for two days - "
    "volunteers kept the shelter open, cooked for everyone, and drove the elderly to safety.",
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models can overfit small datasets.",
    "Neural networks are trained with stochastic gradient descent.",
    "The court ruled that the contract was void from the outset.",
    "Parliament passed the bill by 312 votes to 270.",
    "Rent prices in the capital have doubled in a decade.",
    "Solar panels now supply a fifth of the country's electricity.",
    "My laptop battery drains in under two hours.",
    "Can you recommend a good book about the history of mathematics?",
]


def calib_sentences(n: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = " ".join(x for x in (str(rng.choice(CALIB_SUBJECTS)), str(rng.choice(CALIB_VERBS)),
                                 str(rng.choice(CALIB_OBJECTS)), str(rng.choice(CALIB_TAILS)))
                     if x)
        out.append(s[0].upper() + s[1:] + ".")
    return out


def encode(tok, sentences: list[str], length: int | None) -> dict[str, np.ndarray]:
    enc = tok(sentences, padding="max_length" if length else "longest", max_length=length,
              truncation=bool(length), return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def embed(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def neighbours(e: np.ndarray, k: int = 5) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


