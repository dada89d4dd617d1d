#!/usr/bin/env python3
"""Write the training prompts of the shipped draft head (crates/cli/assets/draft/train_prompts.jsonl).

Chat requests are templates x topics, raw prompts are text openings x subjects, shuffled with a
fixed seed. None of them appears in crates/cli/tests/data/draft_prompts.json (the held-out set);
the script checks that. Usage: python3 scripts/draft_train_prompts.py [OUT.jsonl]
"""
import json, random, sys, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "crates/cli/assets/draft/train_prompts.jsonl"
HELD_OUT = ROOT / "crates/cli/tests/data/draft_prompts.json"

TOPICS = ["volcanoes", "the water cycle", "black holes", "the French Revolution", "machine learning",
    "coral reefs", "the Roman Empire", "electric cars", "honey bees", "the internet", "vaccines",
    "earthquakes", "the Great Wall of China", "solar panels", "chess", "the human brain", "rainbows",
    "the stock market", "recycling", "dinosaurs", "the moon landing", "jazz music", "gravity",
    "penguins", "cloud computing", "the Renaissance", "tornadoes", "DNA", "coffee", "the Olympic Games",
    "bread baking", "meditation", "the printing of money", "glaciers", "whales", "democracy",
    "the Industrial Revolution", "magnets", "antibiotics", "the Amazon rainforest", "sleep",
    "video games", "the pyramids of Egypt", "batteries", "friendship", "inflation", "deserts",
    "the violin", "spiders", "public speaking"]
CHAT = ["What is {}?", "Explain {} in simple terms.", "Tell me three interesting facts about {}.",
    "Write a short paragraph about {}.", "Why is {} important?", "How would you teach a child about {}?",
    "What are common misconceptions about {}?", "Give me a brief history of {}.",
    "Write a haiku about {}.", "What are the pros and cons of {}?"]
EXTRA_CHAT = ["How do I boil an egg?", "Write a thank-you note to a teacher.", "What is 15 times 12?",
    "Suggest a name for a pet turtle.", "How can I improve my handwriting?", "Translate 'good morning' into Spanish.",
    "Write a limerick about a cat who loves cheese.", "What is the difference between weather and climate?",
    "Give me a workout plan for beginners.", "How do I write a function that reverses a string in Python?",
    "Plan a three-day trip to Rome.", "What are good habits for studying?", "Describe a sunset over the ocean.",
    "How does a refrigerator work?", "What is a prime number?", "Write an email asking for a day off.",
    "How do airplanes stay in the air?", "What should I cook for dinner tonight?", "Explain recursion with an example.",
    "What is the capital of Australia?", "Write a story about a robot who learns to paint.",
    "How can I save money on groceries?", "What is the meaning of the word 'serendipity'?",
    "List the planets of the solar system.", "How do I apologize to a friend?"]
OPENINGS = ["The most surprising thing about {} is", "A brief introduction to {}.\n\n",
    "Scientists have long studied {}, and", "In this article we will look at {} and",
    "Many people do not know that {}", "The story of {} begins"]
RAW = ["It was late in the evening when", "Dear diary, today I", "The old man looked at the sea and",
    "import numpy as np\n\ndef", "Step 1: Preheat the oven to", "Once there was a little fox who",
    "The meeting was called to order at", "According to the latest report,", "She opened the door slowly and saw",
    "Q: What is the tallest mountain in the world?\nA:", "The rules of the game are simple:",
    "Abstract\n\nWe present a method for", "My favorite season of the year is", "The train was late again, so",
    "#include <stdio.h>\n\nint main(void) {\n", "In the beginning, the town had only", "Here is a list of things to do this weekend:\n1.",
    "The professor began the lecture by saying", "When I was a child, my grandmother", "The ship sailed north for three days until"]

def main():
    rng = random.Random(7)
    chat = [t.format(x) for t in CHAT for x in TOPICS]
    rng.shuffle(chat)
    chat = chat[:300] + EXTRA_CHAT
    raw = [o.format(x) for o in OPENINGS for x in TOPICS]
    rng.shuffle(raw)
    raw = raw[:130] + RAW
    held = json.loads(HELD_OUT.read_text())
    held = set(held["chat"]) | set(held["raw"])
    lines = [{"chat": c} for c in chat] + [{"text": r} for r in raw]
    assert not any((l.get("chat") or l.get("text")) in held for l in lines), "overlaps the held-out set"
    rng.shuffle(lines)
    OUT.write_text("".join(json.dumps(l) + "\n" for l in lines))
    print(f"wrote {OUT}: {len(chat)} chat, {len(raw)} raw prompts")

main()
