#!/usr/bin/env python3
"""Write the training prompts of the shipped draft head (crates/cli/assets/draft/train_prompts.jsonl).

Chat requests are request templates x subjects, raw prompts are text openings x subjects plus
story, code, recipe, letter and list openings, shuffled with a fixed seed. The subjects avoid those
of the held-out set (crates/cli/tests/data/draft_prompts.json) and no prompt equals one of its
prompts; the script checks both.

A draft head generalises from the variety of its distillation data (the first head, trained on 475
prompts of 50 subjects, agreed with the model 96% of the time on its training prompts and ~20% on
new ones), so this set is large and varied: several thousand prompts over a few hundred subjects.

Usage: python3 scripts/draft_train_prompts.py [OUT.jsonl] [N_CHAT] [N_RAW]
"""
import json, random, sys, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "crates/cli/assets/draft/train_prompts.jsonl"
N_CHAT = int(sys.argv[2]) if len(sys.argv) > 2 else 2400
N_RAW = int(sys.argv[3]) if len(sys.argv) > 3 else 1200
HELD_OUT = ROOT / "crates/cli/tests/data/draft_prompts.json"

# Words naming the held-out prompts' subjects: no training prompt may contain them.
HELD_OUT_SUBJECTS = ["boiling", "cover letter", "binary search", "autumn", "cat and a dog",
    "green tea", "Romeo", "Juliet", "sky", "breakfast", "software engineer", "photosynthesis",
    "camping", "printing press", "village by the sea", "install the package", "heart",
    "fibonacci", "Moon", "moon", "recipe calls", "climate change", "Paris", "detective",
    "stock market"]

SUBJECTS = """volcanoes|the water cycle|black holes|the French Revolution|machine learning|coral reefs|
the Roman Empire|electric cars|honey bees|the internet|vaccines|earthquakes|the Great Wall of China|
solar panels|chess|the human brain|rainbows|recycling|dinosaurs|jazz music|gravity|penguins|
cloud computing|the Renaissance|tornadoes|DNA|coffee|the Olympic Games|bread baking|meditation|
glaciers|whales|democracy|the Industrial Revolution|magnets|antibiotics|the Amazon rainforest|sleep|
video games|the pyramids of Egypt|batteries|friendship|inflation|deserts|the violin|spiders|
public speaking|the immune system|blockchain|the Silk Road|wind turbines|octopuses|the Cold War|
nuclear energy|the piano|bicycles|time management|the ocean tides|mushrooms|the Vikings|
artificial intelligence|rain forests|the printing of books|ancient Greece|the Mayan civilization|
hurricanes|lightning|the solar system|Mars|comets|the speed of light|electricity|steam engines|
airplanes|submarines|the telephone|radio|television|smartphones|social media|online privacy|
passwords|computer viruses|open source software|databases|the Linux kernel|compilers|
programming languages|Python|JavaScript|web browsers|email|spreadsheets|robots|3D printing|
self-driving cars|drones|satellites|GPS|the metric system|fractions|geometry|algebra|statistics|
probability|prime numbers|the number zero|calendars|clocks|maps|the alphabet|languages of the world|
learning a second language|poetry|novels|libraries|museums|theater|opera|ballet|hip hop|
rock and roll|classical music|the guitar|drums|painting|sculpture|photography|film making|
architecture|bridges|skyscrapers|castles|cathedrals|gardens|houseplants|tomatoes|apples|bananas|
chocolate|cheese|rice|pasta|pizza|soup|salads|spices|vegetarian cooking|baking cookies|
grilling|fermentation|vitamins|exercise|running|swimming|yoga|football|basketball|tennis|
cricket|baseball|cycling races|mountain climbing|skiing|surfing|sailing|fishing|hiking|bird watching|
dogs|horses|elephants|lions|tigers|wolves|bats|owls|eagles|butterflies|ants|frogs|snakes|sharks|
dolphins|jellyfish|trees|flowers|seeds|soil|rivers|lakes|mountains|islands|caves|the Arctic|
Antarctica|the Sahara|the Himalayas|the Nile|the Mississippi River|Japan|India|Brazil|Canada|
Egypt|Australia|Mexico|Italy|China|Kenya|Norway|trade|money|banks|taxes|saving money|budgeting|
starting a business|marketing|job interviews|teamwork|leadership|negotiation|remote work|
productivity|habits|motivation|stress|happiness|kindness|honesty|parenting|grandparents|
moving to a new city|renting an apartment|buying a car|cooking for a family|cleaning the house|
laundry|sewing|knitting|woodworking|painting a room|fixing a bike|first aid|fire safety|
earthquake safety|recycling plastic|composting|air pollution|clean water|renewable energy|
endangered species|national parks|the ozone layer|ocean plastic|bees and pollination|
the scientific method|Isaac Newton|Albert Einstein|Marie Curie|Charles Darwin|Leonardo da Vinci|
Shakespeare's plays|Greek mythology|fairy tales|dragons|pirates|knights|samurai|astronauts|
the International Space Station|telescopes|microscopes|atoms|molecules|chemical reactions|
acids and bases|the periodic table|cells|bacteria|viruses|genetics|evolution|the heartbeat of a city|
blood types|bones|muscles|the eye|the ear|teeth|dreams|memory|emotions|language learning in babies|
the history of writing|ancient Rome's roads|medieval castles|the Black Death|the Ottoman Empire|
the American Revolution|World War I|World War II|the United Nations|elections|human rights|
free speech|newspapers|advertising|fashion|shoes|hats|tea ceremonies|holidays|birthdays|weddings|
festivals|fireworks|board games|card games|puzzles|magic tricks|riddles|jokes|comic books|
cartoons|superheroes|science fiction|mystery novels|letters|postcards|trains|subways|ships|
lighthouses|harbors|airports|hotels|restaurants|markets|supermarkets|farms|tractors|wheat|
cotton|wool|silk|glass|steel|concrete|plastic|paper|ink|pencils|keyboards|the mouse|printers|
the cloud|artificial satellites|the weather|snow|fog|wind|seasons|sunrise|night sky stars|
the calendar year|leap years|time zones|the equator|volcanic islands|sand dunes""".replace("\n", "").split("|")

CHAT = ["What is {}?", "Explain {} in simple terms.", "Tell me three interesting facts about {}.",
    "Write a short paragraph about {}.", "Why is {} important?", "How would you teach a child about {}?",
    "What are common misconceptions about {}?", "Give me a brief history of {}.",
    "Write a haiku about {}.", "What are the pros and cons of {}?", "Write a short story involving {}.",
    "Give me five tips related to {}.", "How does {} work?", "What should a beginner know about {}?",
    "Write a limerick about {}.", "Describe {} to someone who has never heard of it.",
    "What are the most important things to know about {}?", "Compare {} with something similar.",
    "Write a short poem about {}.", "What questions do people often ask about {}?",
    "Summarize what you know about {} in one paragraph.", "Can you help me understand {}?",
    "Write a quiz with three questions about {}.", "What is the future of {}?",
    "Write an encouraging message to a student studying {}.", "List some fun activities related to {}.",
    "What careers are connected to {}?", "Explain {} step by step.",
    "I am curious about {}. Where should I start?", "Write a tweet about {}.",
    "What would happen if {} disappeared?", "Give an example that illustrates {}.",
    "Write a dialogue between two friends talking about {}.", "What are three surprising facts about {}?",
    "How has {} changed over time?", "Why do people find {} interesting?"]
EXTRA_CHAT = ["How do I boil an egg?", "Write a thank-you note to a teacher.", "What is 15 times 12?",
    "Suggest a name for a pet turtle.", "How can I improve my handwriting?", "Translate 'good morning' into Spanish.",
    "Write a limerick about a cat who loves cheese.", "What is the difference between weather and climate?",
    "Give me a workout plan for beginners.", "How do I write a function that reverses a string in Python?",
    "Plan a three-day trip to Rome.", "What are good habits for studying?", "Describe a sunset over the ocean.",
    "How does a refrigerator work?", "What is a prime number?", "Write an email asking for a day off.",
    "How do airplanes stay in the air?", "What should I cook for dinner tonight?", "Explain recursion with an example.",
    "What is the capital of Australia?", "Write a story about a robot who learns to paint.",
    "How can I save money on groceries?", "What is the meaning of the word 'serendipity'?",
    "List the planets of the solar system.", "How do I apologize to a friend?",
    "Write a Python function that checks whether a word is a palindrome.", "What is 144 divided by 12?",
    "Write a birthday message for my sister.", "How do I change a flat tire?",
    "Give me a packing list for a beach holiday.", "What is the difference between a virus and a bacterium?",
    "How do I make my resume stand out?", "Write a short speech for a friend's wedding.",
    "What are some good books for teenagers?", "How do I start learning to draw?",
    "Explain the difference between a list and a tuple in Python.", "Write a SQL query that counts rows in a table.",
    "How do I calm down before an exam?", "What is the tallest animal in the world?",
    "Write a product description for a reusable water bottle.", "How do I grow basil at home?",
    "What is an API?", "Write a short fable with a moral.", "How many continents are there?",
    "Give me a list of ten common English idioms and their meanings.", "How do I write a good essay introduction?",
    "What is the Pythagorean theorem?", "Write a JavaScript function that adds two numbers.",
    "What are the symptoms of a cold?", "How do I take care of a goldfish?"]
OPENINGS = ["The most surprising thing about {} is", "A brief introduction to {}.\n\n",
    "Scientists have long studied {}, and", "In this article we will look at {} and",
    "Many people do not know that {}", "The story of {} begins", "Chapter 3: {}\n\n",
    "Everything you need to know about {}:\n\n", "{} has fascinated people for centuries because",
    "Lecture notes: {}\n\n1.", "My grandfather once told me about {}, and", "Frequently asked questions about {}\n\nQ:",
    "The first time I learned about {}, I", "Here are five facts about {}:\n1.",
    "Wikipedia describes {} as", "A beginner's guide to {}\n\nIf you are new to this topic,"]
RAW = ["It was late in the evening when", "Dear diary, today I", "The old man looked at the sea and",
    "import numpy as np\n\ndef", "Step 1: Preheat the oven to", "Once there was a little fox who",
    "The meeting was called to order at", "According to the latest report,", "She opened the door slowly and saw",
    "Q: What is the tallest mountain in the world?\nA:", "The rules of the game are simple:",
    "Abstract\n\nWe present a method for", "My favorite season of the year is", "The train was late again, so",
    "#include <stdio.h>\n\nint main(void) {\n", "In the beginning, the town had only", "Here is a list of things to do this weekend:\n1.",
    "The professor began the lecture by saying", "When I was a child, my grandmother", "The ship sailed north for three days until",
    "def is_prime(n):\n", "class Stack:\n    def __init__(self):\n", "function sortNumbers(arr) {\n",
    "SELECT name, age FROM users WHERE", "<!DOCTYPE html>\n<html>\n<head>\n", "fn main() {\n    let",
    "Ingredients:\n- 2 eggs\n-", "Dear Sir or Madam,\n\nI am writing to", "Hi Sarah,\n\nThanks for your message. I",
    "BREAKING NEWS: Officials announced today that", "Top 10 reasons to", "How to train your puppy in five steps.\n\nStep 1:",
    "The quick brown fox", "It rained all day, and the children", "The spaceship landed softly on the red sand of",
    "Minutes of the annual meeting\n\nPresent:", "Product review: I bought this blender last month and",
    "The museum's new exhibit opens with", "Alice had never seen a door so small. She", "The king called his three sons and said,",
    "In mathematics, a function is", "The main causes of the war were", "The first law of thermodynamics states that",
    "To make a paper airplane, fold", "The weather forecast for tomorrow:", "Once the sun had set, the forest",
    "Note to self: remember to", "The company was founded in 1998 by", "In conclusion, the results show that"]


def main():
    rng = random.Random(7)
    held = json.loads(HELD_OUT.read_text())
    held_prompts = set(held["chat"]) | set(held["raw"])
    clean = lambda s: not any(w.lower() in s.lower() for w in HELD_OUT_SUBJECTS)
    subjects = [s.strip() for s in SUBJECTS if s.strip()]
    assert len(set(subjects)) == len(subjects), "a subject appears twice"
    chat = [t.format(x) for t in CHAT for x in subjects]
    chat = [c for c in chat if clean(c)]
    rng.shuffle(chat)
    chat = chat[: N_CHAT - len(EXTRA_CHAT)] + EXTRA_CHAT
    raw = [o.format(x) for o in OPENINGS for x in subjects]
    raw = [r[0].upper() + r[1:] for r in raw if clean(r)]
    rng.shuffle(raw)
    raw = raw[: N_RAW - len(RAW)] + RAW
    lines = [{"chat": c} for c in chat] + [{"text": r} for r in raw]
    texts = [l.get("chat") or l.get("text") for l in lines]
    assert not any(t in held_prompts for t in texts), "overlaps the held-out set"
    assert all(clean(t) for t in texts), "names a held-out subject"
    rng.shuffle(lines)
    OUT.write_text("".join(json.dumps(l) + "\n" for l in lines))
    print(f"wrote {OUT}: {len(chat)} chat, {len(raw)} raw prompts over {len(subjects)} subjects")

main()
