"""Names for containers started without ``--name``: an adjective and a person, like Docker's
``focused_turing``. Ours honour people of the kernel, the shell and the container story."""

import random

ADJECTIVES = [
    "agile", "bold", "brave", "bright", "calm", "careful", "cheerful", "clever", "curious", "daring",
    "eager", "earnest", "fearless", "friendly", "gentle", "happy", "honest", "humble", "jolly", "keen",
    "kind", "lively", "lucky", "merry", "modest", "nimble", "patient", "plucky", "polite", "proud",
    "quick", "quiet", "ready", "serene", "sharp", "steady", "sunny", "swift", "tidy", "witty",
]

PEOPLE = [
    "allen", "bach", "backus", "biederman", "bosworth", "cerf", "corbato", "dennis", "dijkstra", "emelianov",
    "engelbart", "goldberg", "hamilton", "hopper", "joy", "kernighan", "knuth", "lamport", "liskov", "lovelace",
    "mccarthy", "mcilroy", "menage", "morris", "noyce", "ousterhout", "pike", "ritchie", "saltzer", "sammet",
    "shamir", "stallman", "stonebraker", "tanenbaum", "thompson", "torvalds", "turing", "wilkes", "wirth",
]


def generate(taken=()):
    """A name not in ``taken`` (a digit is added if all tries are taken, as Docker does)."""
    for attempt in range(100):
        name = f"{random.choice(ADJECTIVES)}_{random.choice(PEOPLE)}"
        if attempt > 10:
            name += str(random.randint(1, 9))
        if name not in taken:
            return name
    raise RuntimeError("no free container name")
