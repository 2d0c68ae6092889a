#!/usr/bin/env python3
"""Writes N presets for U users as COPY text (tab separated) on stdout, for the search benchmark.

Columns: user_id, name, description, tags, prompt, parameters, search_text (the trigram search of
before, kept in the bench database for comparison), title_words, words (as the database's
preset_search_words() makes them: the seed loads with triggers off). Deterministic (seeded).
"""
import random
import re
import sys

n, users = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(42)
verbs = ["Summarize", "Translate", "Explain", "Draft", "Rewrite", "Classify", "Extract", "Outline", "Proofread",
         "Brainstorm", "Simplify", "Compare", "Critique", "Plan", "Describe", "Generate", "Answer", "Convert"]
objects = ["for a 2nd grader", "into French", "meeting notes", "an email reply", "a product description", "legal clauses",
           "a bug report", "release notes", "a cover letter", "customer feedback", "a recipe", "a travel plan",
           "support tickets", "a blog post", "SQL queries", "a poem", "interview questions", "a lesson plan",
           "tweets", "research abstracts", "a job posting", "code comments", "a weekly report", "song lyrics"]
tags = ["education", "language", "work", "email", "writing", "code", "support", "marketing", "legal", "fun",
        "research", "planning", "summary", "translation", "sql", "poetry", "hr", "travel", "cooking", "notes"]
out = sys.stdout
per_user = n // users
for u in range(users):
    user = f"user{u:06d}"
    for k in range(per_user):
        name = f"{rng.choice(verbs)} {rng.choice(objects)} #{k}"
        t = rng.sample(tags, rng.randint(0, 3))
        prompt = f"{name}. Use a clear, friendly tone.\\n\\n{{{{input}}}}"
        params = '{"temperature": %.1f, "max_tokens": %d}' % (rng.randint(0, 15) / 10, rng.choice([64, 128, 256]))
        tag_array = "{" + ",".join(t) + "}"
        search = (name + " " + " ".join(t)).lower()
        words = "{" + ",".join(sorted(set(w for w in re.split(r"[^a-z0-9]+", search) if 0 < len(w) <= 40))) + "}"
        out.write(f"{user}\t{name}\t\t{tag_array}\t{prompt}\t{params}\t{search}\t{words}\t{words}\n")
