"""Synthetic Quora Question Pairs TSV in the release's exact format, for offline demos and tests."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qdup.errors import ConfigError
from qdup.fileio import atomic_write_bytes, sha256_file

__all__ = ["COLUMNS", "FULL_ROWS", "generate_pairs", "write_demo_tsv"]

COLUMNS = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
FULL_ROWS = 404_290  # size of the real release

# Shares matched to the real release (36.9% duplicates).
_DUPLICATE_SHARE = 0.37
# Non-duplicate strategies: change one filler (hard negative), change the intent but keep the
# filler (topical negative), or an unrelated question (the real file has those too).
_NEG_SWAP_FILLER = 0.45
_NEG_SWAP_INTENT = 0.42  # the rest (0.13) are unrelated
# Probability that question1 of a pair is a question already asked in an earlier pair; with the
# source chosen uniformly among earlier rows this is a rich-get-richer process, so a few questions
# recur many times, as in the real data.
_REUSE = 0.24
# Probability that the two columns of a pair are swapped, so recurring questions appear as
# question1 and question2 alike.
_SWAP_COLUMNS = 0.5
# Rounds of redrawing bad question2 draws; a handful suffice at full size.
_MAX_REDRAWS = 50
_P_MOD = 0.5  # an intent-specific modifier inside the question ("... as a beginner?")
_P_TRAIL = 0.17  # a trailing sentence ("Please explain in detail.")
# Number of leading context sentences: 0, 1, 2, 3, 4; long multi-sentence questions are rare.
_CTX_COUNTS = np.array([0.785, 0.176, 0.034, 0.0045, 0.0005])
# Short context families: hand-written, age/occupation/place, experience, year of study, moving.
_CTX_FAMILIES = np.array([0.4, 0.22, 0.12, 0.12, 0.14])
# Styles: as written, all lower case, no question mark, lower-case first letter.
_STYLES = np.array([0.93, 0.035, 0.025, 0.01])

# ---------------------------------------------------------------------------------------------
# Vocabulary. Every filler string belongs to exactly one category, so a rendered text determines
# its intent and fillers (the same text never gets two meanings, hence never two labels).
# ---------------------------------------------------------------------------------------------

_CATEGORIES: dict[str, tuple] = {
    "lang": (
        "Python", "Java", "JavaScript", "C++", "C", "C#", "Ruby", "Go", "Rust", "Swift", "Kotlin",
        "PHP", "R", "Scala", "Haskell", "Perl", "MATLAB", "SQL", "TypeScript", "Lua", "Julia",
        "Dart", "Elixir", "Erlang", "Clojure", "F#", "Objective-C", "Fortran", "COBOL",
        "Assembly language", "Prolog", "Lisp", "Scheme", "OCaml", "Groovy", "Visual Basic",
        "Bash scripting", "Pascal", "Delphi", "Solidity", "VHDL", "Verilog", "Scratch",
        "Smalltalk", "Ada", "Racket", "Elm", "Crystal", "Nim", "CoffeeScript",
    ),
    "hlang": (
        "Spanish", "French", "German", "Japanese", "Mandarin Chinese", "Cantonese", "Hindi",
        "Arabic", "Russian", "Portuguese", "Italian", "Korean", "Dutch", "Swedish", "Norwegian",
        "Danish", "Finnish", "Polish", "Turkish", "Greek", "Hebrew", "Persian", "Urdu", "Bengali",
        "Tamil", "Telugu", "Marathi", "Punjabi", "Gujarati", "Kannada", "Malayalam", "Thai",
        "Vietnamese", "Indonesian", "Swahili", "Latin", "Sanskrit", "Czech", "Hungarian",
        "Romanian", "Ukrainian", "Tagalog", "Esperanto", "Irish Gaelic", "Welsh", "Icelandic",
    ),
    "country": (
        "Afghanistan", "Albania", "Algeria", "Argentina", "Armenia", "Australia", "Austria",
        "Bangladesh", "Belgium", "Bhutan", "Bolivia", "Brazil", "Bulgaria", "Cambodia", "Cameroon",
        "Canada", "Chile", "China", "Colombia", "Costa Rica", "Croatia", "Cuba", "Cyprus",
        "the Czech Republic", "Denmark", "Ecuador", "Egypt", "Estonia", "Ethiopia", "Fiji",
        "Finland", "France", "Georgia", "Germany", "Ghana", "Greece", "Guatemala", "Hungary",
        "Iceland", "India", "Indonesia", "Iran", "Iraq", "Ireland", "Israel", "Italy", "Jamaica",
        "Japan", "Jordan", "Kazakhstan", "Kenya", "Kuwait", "Laos", "Latvia", "Lebanon", "Libya",
        "Lithuania", "Luxembourg", "Madagascar", "Malaysia", "the Maldives", "Mali", "Malta",
        "Mexico", "Mongolia", "Morocco", "Mozambique", "Myanmar", "Nepal", "the Netherlands",
        "New Zealand", "Nigeria", "North Korea", "Norway", "Oman", "Pakistan", "Panama",
        "Paraguay", "Peru", "the Philippines", "Poland", "Portugal", "Qatar", "Romania", "Russia",
        "Rwanda", "Saudi Arabia", "Senegal", "Serbia", "Singapore", "Slovakia", "Slovenia",
        "Somalia", "South Africa", "South Korea", "Spain", "Sri Lanka", "Sudan", "Sweden",
        "Switzerland", "Syria", "Taiwan", "Tanzania", "Thailand", "Tunisia", "Turkey", "Uganda",
        "Ukraine", "the United Arab Emirates", "the United Kingdom", "the United States",
        "Uruguay", "Uzbekistan", "Venezuela", "Vietnam", "Yemen", "Zambia", "Zimbabwe",
    ),
    "city": (
        "Mumbai", "Delhi", "Bangalore", "Hyderabad", "Chennai", "Kolkata", "Pune", "Ahmedabad",
        "Jaipur", "Lucknow", "Chandigarh", "Kochi", "Indore", "Bhopal", "Nagpur", "Coimbatore",
        "Noida", "Gurgaon", "Patna", "Surat", "Visakhapatnam", "Mysore", "Dehradun", "Kanpur",
        "Vadodara", "Bhubaneswar", "Guwahati", "Ranchi", "Thiruvananthapuram", "Mangalore",
        "New York City", "Los Angeles", "Chicago", "San Francisco", "Seattle", "Boston", "Austin",
        "Houston", "Miami", "Denver", "Atlanta", "Las Vegas", "Washington DC", "Philadelphia",
        "San Diego", "Portland", "Toronto", "Vancouver", "Montreal", "Calgary", "London",
        "Manchester", "Edinburgh", "Dublin", "Paris", "Berlin", "Munich", "Hamburg", "Amsterdam",
        "Brussels", "Zurich", "Geneva", "Vienna", "Prague", "Budapest", "Warsaw", "Rome", "Milan",
        "Venice", "Florence", "Madrid", "Barcelona", "Lisbon", "Athens", "Istanbul", "Moscow",
        "Saint Petersburg", "Stockholm", "Oslo", "Copenhagen", "Helsinki", "Dubai", "Abu Dhabi",
        "Doha", "Riyadh", "Tel Aviv", "Cairo", "Cape Town", "Johannesburg", "Nairobi", "Lagos",
        "Tokyo", "Osaka", "Kyoto", "Seoul", "Beijing", "Shanghai", "Hong Kong", "Shenzhen",
        "Taipei", "Bangkok", "Hanoi", "Ho Chi Minh City", "Kuala Lumpur", "Jakarta", "Manila",
        "Sydney", "Melbourne", "Brisbane", "Perth", "Auckland", "Wellington", "Sao Paulo",
        "Rio de Janeiro", "Buenos Aires", "Lima", "Bogota", "Mexico City", "Santiago", "Karachi",
        "Lahore", "Islamabad", "Dhaka", "Kathmandu", "Colombo",
    ),
    "exam": (
        "GATE", "CAT", "GRE", "GMAT", "SAT", "ACT", "IELTS", "TOEFL", "UPSC", "JEE Main",
        "JEE Advanced", "NEET", "AIIMS", "CLAT", "MCAT", "LSAT", "SSC CGL", "IBPS PO", "SBI PO",
        "CA Final", "CA Foundation", "CFA Level 1", "CPA", "NDA", "CDS", "BITSAT", "KVPY", "NTSE",
        "XAT", "SNAP", "NMAT", "AFCAT", "UGC NET", "CSIR NET", "USMLE Step 1", "PLAB", "ESE",
        "RBI Grade B", "CMAT", "COMEDK",
    ),
    "dish": (
        "pizza", "pasta", "biryani", "sushi", "ramen", "paneer butter masala", "butter chicken",
        "dosa", "idli", "samosa", "pav bhaji", "chole bhature", "brownies", "chocolate cake",
        "cheesecake", "pancakes", "waffles", "French fries", "hummus", "falafel", "guacamole",
        "lasagna", "risotto", "tacos", "burritos", "dumplings", "momos", "fried rice",
        "hakka noodles", "gulab jamun", "rasgulla", "jalebi", "tiramisu", "macarons",
        "croissants", "bagels", "burgers", "fried chicken", "masala chai", "cold coffee",
        "mango lassi", "tomato soup", "chicken curry", "dal makhani", "aloo paratha", "pani puri",
        "vada pav", "mutton rogan josh", "fish and chips", "mac and cheese", "apple pie",
        "banana bread", "garlic bread", "pad thai", "kimchi fried rice", "shawarma",
    ),
    "ingredient": (
        "peanut butter", "oatmeal", "quinoa", "Greek yogurt", "dark chocolate", "green tea",
        "black coffee", "brown rice", "whole wheat bread", "eggs", "avocado", "bananas",
        "almonds", "cashews", "honey", "olive oil", "coconut oil", "ghee", "paneer", "tofu",
        "kale", "spinach", "broccoli", "sweet potatoes", "popcorn", "ice cream", "mayonnaise",
        "instant noodles", "protein shakes", "red meat", "chicken breast", "salmon", "tuna",
        "cheese", "butter", "milk", "soy milk", "almond milk", "kombucha", "kimchi",
        "apple cider vinegar", "chia seeds", "flax seeds", "white sugar", "brown sugar",
        "artificial sweeteners", "diet soda", "energy drinks", "fruit juice", "coconut water",
        "turmeric", "garlic", "ginger", "mushrooms", "watermelon", "dates", "jaggery", "soybeans",
    ),
    "disease": (
        "diabetes", "type 2 diabetes", "high blood pressure", "asthma", "migraine", "depression",
        "anxiety", "insomnia", "acne", "hair loss", "dandruff", "psoriasis", "eczema",
        "arthritis", "back pain", "kidney stones", "gallstones", "dengue", "malaria", "typhoid",
        "tuberculosis", "jaundice", "hepatitis B", "HIV", "pneumonia", "bronchitis", "sinusitis",
        "hypothyroidism", "PCOS", "anemia", "vitamin D deficiency", "gastritis", "acid reflux",
        "constipation", "IBS", "food poisoning", "chickenpox", "measles", "Zika virus",
        "Alzheimer's disease", "Parkinson's disease", "autism", "ADHD", "OCD",
        "bipolar disorder", "schizophrenia", "dementia", "leukemia", "lung cancer",
        "breast cancer", "skin cancer", "sleep apnea", "vertigo", "tinnitus", "sciatica",
        "scoliosis", "piles", "stomach ulcers", "dark circles", "snoring", "a panic attack",
    ),
    "career": (
        "a doctor", "a software engineer", "a data scientist", "a pilot", "an astronaut",
        "an actor", "a lawyer", "a chartered accountant", "an investment banker",
        "a product manager", "a civil engineer", "a mechanical engineer", "a teacher",
        "a professor", "a psychologist", "a nurse", "a dentist", "a pharmacist", "a journalist",
        "a photographer", "a graphic designer", "a web developer", "a game developer",
        "a YouTuber", "a writer", "a novelist", "a chef", "a fashion designer", "an architect",
        "an IAS officer", "an IPS officer", "a police officer", "a firefighter",
        "a marine biologist", "an ethical hacker", "a cybersecurity analyst",
        "a machine learning engineer", "a music producer", "a DJ", "a film director",
        "a stock broker", "a real estate agent", "an entrepreneur", "a management consultant",
        "a psychiatrist", "a surgeon", "a veterinarian", "a physiotherapist",
        "an interior designer", "a translator", "a flight attendant", "a merchant navy officer",
        "a politician", "a professional gamer", "a stand-up comedian", "a UX designer",
        "a DevOps engineer", "an aerospace engineer", "a biomedical engineer", "an economist",
        "a statistician", "an actuary", "a research scientist", "a diplomat", "a data analyst",
    ),
    "company": (
        "Google", "Microsoft", "Amazon", "Apple", "IBM", "Oracle", "Intel", "Cisco", "Adobe",
        "Salesforce", "Infosys", "TCS", "Wipro", "Accenture", "Cognizant", "HCL",
        "Tech Mahindra", "Deloitte", "KPMG", "EY", "PwC", "McKinsey", "BCG", "Bain",
        "Goldman Sachs", "JP Morgan", "Morgan Stanley", "Deutsche Bank", "Citibank", "HSBC",
        "Flipkart", "Paytm", "Ola", "Zomato", "Swiggy", "Snapdeal", "Tesla", "SpaceX", "Netflix",
        "Samsung", "Sony", "Nvidia", "Qualcomm", "Dropbox", "Stripe", "Palantir", "Walmart",
        "Procter & Gamble", "Unilever", "Nestle", "Coca-Cola", "PepsiCo", "Reliance Industries",
        "Tata Motors", "Mahindra", "ISRO", "DRDO", "NASA", "Boeing", "Airbus", "Shell",
        "Mu Sigma", "Directi", "Zoho", "Freshdesk", "Capgemini", "SAP", "VMware",
    ),
    "app": (
        "Facebook", "Instagram", "Twitter", "Snapchat", "WhatsApp", "YouTube", "Quora",
        "LinkedIn", "Reddit", "Pinterest", "Tinder", "Tumblr", "Telegram", "Skype", "Gmail",
        "Yahoo Mail", "Outlook", "Musical.ly", "Spotify", "SoundCloud", "Medium", "Flickr",
        "WeChat", "Viber", "Hike", "Truecaller", "Uber", "Airbnb", "Slack", "GitHub",
        "Stack Overflow", "Periscope", "Vine", "Google Plus",
    ),
    "product": (
        "iPhone 7", "iPhone 7 Plus", "iPhone 6s", "iPhone SE", "Samsung Galaxy S7",
        "Samsung Galaxy S7 Edge", "Samsung Galaxy Note 7", "Google Pixel", "Google Pixel XL",
        "OnePlus 3", "OnePlus 3T", "Moto G4 Plus", "Moto Z", "Xiaomi Redmi Note 4",
        "Xiaomi Mi 5", "Lenovo K6 Note", "LG G5", "HTC 10", "Nexus 6P", "MacBook Air",
        "MacBook Pro", "Dell XPS 13", "Lenovo ThinkPad X1 Carbon", "HP Spectre x360",
        "Microsoft Surface Pro 4", "iPad Pro", "iPad Air 2", "Kindle Paperwhite", "Apple Watch",
        "Fitbit Charge 2", "PlayStation 4", "PlayStation 4 Pro", "Xbox One", "Nintendo Switch",
        "GoPro Hero 5", "Canon EOS 1300D", "Nikon D3300", "Sony A6000",
        "Bose QuietComfort 35", "Amazon Echo", "Google Home", "Raspberry Pi 3", "Chromecast",
        "Apple TV", "Oculus Rift", "HTC Vive", "Asus ZenFone 3", "Honor 8", "Vivo V5",
        "Oppo F1s",
    ),
    "instrument": (
        "guitar", "piano", "violin", "drums", "flute", "ukulele", "cello", "saxophone",
        "trumpet", "harmonica", "keyboard", "bass guitar", "electric guitar", "sitar", "tabla",
        "harp", "clarinet", "accordion", "banjo", "mandolin", "veena", "harmonium", "trombone",
        "oboe", "bagpipes", "mridangam", "double bass",
    ),
    "subject": (
        "calculus", "linear algebra", "statistics", "probability", "organic chemistry",
        "quantum physics", "quantum mechanics", "thermodynamics", "electromagnetism",
        "general relativity", "string theory", "number theory", "discrete mathematics",
        "data structures", "algorithms", "machine learning", "deep learning",
        "artificial intelligence", "computer networks", "operating systems", "cryptography",
        "blockchain", "cloud computing", "economics", "microeconomics", "macroeconomics",
        "accounting", "philosophy", "psychology", "sociology", "political science",
        "world history", "astronomy", "astrophysics", "genetics", "molecular biology",
        "neuroscience", "evolution", "geology", "climate change", "public speaking",
        "creative writing", "English grammar", "mental math", "photography",
        "digital marketing", "SEO", "graphic design", "personal finance", "time management",
        "negotiation", "critical thinking", "formal logic", "game theory", "linguistics",
        "music theory", "art history", "human anatomy", "biochemistry", "microbiology", "ethics",
        "computer vision", "natural language processing", "compiler design",
        "distributed systems", "topology", "real analysis", "differential equations",
    ),
    "sport": (
        "football", "soccer", "cricket", "tennis", "basketball", "baseball", "field hockey",
        "ice hockey", "golf", "chess", "badminton", "table tennis", "volleyball", "rugby",
        "squash", "snooker", "kabaddi", "handball", "American football", "water polo", "polo",
        "billiards", "lacrosse",
    ),
    "person": (
        "Albert Einstein", "Isaac Newton", "Nikola Tesla", "Mahatma Gandhi", "Jawaharlal Nehru",
        "Sardar Patel", "B. R. Ambedkar", "Subhas Chandra Bose", "APJ Abdul Kalam",
        "Narendra Modi", "Rahul Gandhi", "Arvind Kejriwal", "Donald Trump", "Hillary Clinton",
        "Barack Obama", "Bernie Sanders", "Vladimir Putin", "Angela Merkel", "Winston Churchill",
        "Abraham Lincoln", "Adolf Hitler", "Joseph Stalin", "Napoleon Bonaparte",
        "Alexander the Great", "Julius Caesar", "Leonardo da Vinci", "William Shakespeare",
        "Charles Darwin", "Marie Curie", "Stephen Hawking", "Richard Feynman", "Elon Musk",
        "Steve Jobs", "Bill Gates", "Mark Zuckerberg", "Jeff Bezos", "Warren Buffett",
        "Sachin Tendulkar", "Virat Kohli", "MS Dhoni", "Cristiano Ronaldo", "Lionel Messi",
        "Roger Federer", "Michael Jordan", "Muhammad Ali", "Shah Rukh Khan", "Salman Khan",
        "Amitabh Bachchan", "Rajinikanth", "Michael Jackson", "Taylor Swift",
        "Leonardo DiCaprio", "Nelson Mandela", "Martin Luther King Jr.", "Swami Vivekananda",
        "Chanakya", "Gautama Buddha", "Karl Marx", "Friedrich Nietzsche", "Sigmund Freud",
        "Ratan Tata", "Mukesh Ambani", "Indira Gandhi", "Jacinda Ardern", "Justin Trudeau",
    ),
    "animal": (
        "cats", "dogs", "hamsters", "rabbits", "parrots", "goldfish", "turtles", "tortoises",
        "snakes", "lizards", "horses", "cows", "elephants", "lions", "tigers", "wolves", "foxes",
        "bears", "pandas", "koalas", "kangaroos", "dolphins", "whales", "sharks", "octopuses",
        "penguins", "owls", "eagles", "crows", "pigeons", "bees", "ants", "spiders",
        "butterflies", "frogs", "crocodiles", "chameleons", "ferrets", "guinea pigs",
        "hedgehogs", "raccoons", "squirrels", "bats", "camels", "giraffes", "zebras", "monkeys",
        "gorillas", "chimpanzees", "sloths", "huskies", "German shepherds", "golden retrievers",
    ),
    "show": (
        "Game of Thrones", "Breaking Bad", "Friends", "The Big Bang Theory",
        "How I Met Your Mother", "Sherlock", "House of Cards", "Narcos", "Stranger Things",
        "Westworld", "The Walking Dead", "Prison Break", "Suits", "Dexter", "The Office",
        "Black Mirror", "Mr. Robot", "Silicon Valley", "Better Call Saul", "Vikings", "Lost",
        "Fargo", "True Detective", "Inception", "Interstellar", "The Dark Knight", "The Matrix",
        "Fight Club", "Shutter Island", "The Prestige", "Pulp Fiction", "The Godfather",
        "Memento", "Baahubali", "Dangal", "3 Idiots", "PK", "Lagaan", "Sholay", "La La Land",
        "Arrival", "Donnie Darko", "Mulholland Drive", "2001: A Space Odyssey", "Doctor Who",
        "The Simpsons", "Rick and Morty", "Death Note", "Naruto", "Dragon Ball Z",
    ),
    "investment": (
        "bitcoin", "gold", "silver", "real estate", "mutual funds", "index funds",
        "the stock market", "government bonds", "fixed deposits", "startups", "Apple stock",
        "Tesla stock", "cryptocurrency", "Ethereum", "peer-to-peer lending", "REITs",
        "penny stocks", "ETFs", "the Public Provident Fund", "the National Pension System",
        "agricultural land", "gold ETFs", "blue chip stocks", "forex trading",
    ),
    "university": (
        "MIT", "Stanford University", "Harvard University", "IIT Bombay", "IIT Delhi",
        "IIT Madras", "IIT Kanpur", "IIT Kharagpur", "IIT Roorkee", "IIM Ahmedabad",
        "IIM Bangalore", "IIM Calcutta", "BITS Pilani", "NIT Trichy", "IIIT Hyderabad",
        "Delhi University", "JNU", "the University of Oxford", "the University of Cambridge",
        "Carnegie Mellon University", "UC Berkeley", "Caltech", "Princeton University",
        "Yale University", "Columbia University", "Cornell University",
        "the University of Toronto", "the University of Waterloo", "NUS", "ETH Zurich",
        "TU Munich", "Imperial College London", "the University of Michigan", "Georgia Tech",
        "UCLA", "the University of Melbourne", "Purdue University", "UT Austin", "UIUC",
        "Johns Hopkins University", "NYU", "USC", "Duke University", "the University of Chicago",
        "VIT Vellore", "Manipal University", "SRM University", "Anna University",
    ),
    "word": (
        "serendipity", "carpe diem", "déjà vu", "irony", "nihilism", "karma", "schadenfreude",
        "wanderlust", "hygge", "ikigai", "namaste", "YOLO", "FOMO", "bae", "lit", "savage",
        "woke", "ghosting", "gaslighting", "catfishing", "hipster", "meme", "troll", "clickbait",
        "fake news", "post-truth", "demonetization", "jugaad", "chutzpah", "ennui", "zeitgeist",
        "doppelganger", "epiphany", "paradigm shift", "synergy", "existentialism", "stoicism",
        "utilitarianism", "cognitive dissonance", "Occam's razor", "the butterfly effect",
        "Murphy's law", "Stockholm syndrome", "impostor syndrome", "Dunning-Kruger effect",
        "sapiosexual", "friend zone", "netflix and chill", "on fleek", "basic", "salty",
        "throwing shade", "TL;DR", "mansplaining", "humblebrag", "first world problems",
    ),
    # Pairs: both halves fill {a} and {b} of one template.
    "confusable": (
        ("affect", "effect"), ("who", "whom"), ("fewer", "less"), ("lie", "lay"),
        ("further", "farther"), ("since", "for"), ("which", "that"), ("i.e.", "e.g."),
        ("a", "an"), ("&", "and"), ("shall", "will"), ("may", "might"), ("among", "between"),
        ("historic", "historical"), ("then", "than"), ("its", "it's"), ("your", "you're"),
        ("their", "there"), ("lose", "loose"), ("compliment", "complement"),
        ("principal", "principle"), ("stationary", "stationery"), ("advice", "advise"),
        ("accept", "except"), ("desert", "dessert"), ("imply", "infer"), ("ensure", "insure"),
        ("every day", "everyday"), ("a lot", "alot"), ("say", "tell"), ("till", "until"),
        ("whether", "if"), ("do", "make"), ("had been", "has been"), ("would", "will"),
    ),
}

# Modifiers inserted before the final question mark. Lists are per kind of intent because a
# modifier must keep the question sensible ("learn Python for free", never "capital of France
# for free").
_MODS: dict[str, tuple[str, ...]] = {
    "learn": (
        "as a beginner", "on my own", "for free", "online", "quickly", "in 2017",
        "in a few months", "as a complete beginner", "at home", "in my spare time",
        "as a working professional", "at the age of 30", "as a college student", "step by step",
        "from scratch", "without spending money", "with no prior experience", "by myself",
    ),
    "time": ("in 2017", "these days", "nowadays", "right now", "today", "in 2016", "at the moment"),
    "travel": (
        "in 2017", "on a budget", "with family", "for a week", "as a solo traveller",
        "in winter", "in summer", "during the monsoon", "as an Indian", "for first-time visitors",
        "with kids", "in December", "for three days", "as a backpacker",
    ),
    "living": (
        "as a student", "for a family of four", "on a single income", "as a software engineer",
        "in 2017", "as an expat", "as a bachelor", "with a salary of 50k",
    ),
    "visa": (
        "from India", "as an Indian citizen", "in 2017", "as a software engineer",
        "after my master's", "with my family", "as a student", "without a job offer",
    ),
    "fitness": (
        "naturally", "without medicine", "at home", "in a month", "without going to the gym",
        "without dieting", "in two weeks", "as a vegetarian", "after 30", "safely",
        "as a teenager", "after pregnancy",
    ),
    "medical": (
        "in children", "in adults", "in women", "in men", "in elderly people",
        "in the early stages", "in teenagers", "during pregnancy",
    ),
    "treatment": (
        "naturally", "at home", "permanently", "without surgery", "in children",
        "using home remedies", "with Ayurveda", "without side effects",
    ),
    "food": ("every day", "at night", "for breakfast", "after a workout", "during pregnancy",
             "on an empty stomach", "for weight loss", "in summer"),
    "cook": ("without an oven", "in 20 minutes", "the Indian way", "for beginners",
             "without eggs", "in a microwave", "for a party", "like a restaurant"),
    "career": (
        "as a fresher", "in 2017", "after graduation", "with no experience", "after 12th",
        "in India", "in the US", "as a non-CS student", "with a low GPA", "after an MBA", "at 30",
        "in Canada",
    ),
    "company": (
        "as a fresher", "in 2017", "as an intern", "in India", "as a software engineer",
        "without a referral", "from a tier 3 college", "after graduation", "in the US",
    ),
    "exam": (
        "in 3 months", "in 6 months", "without coaching", "while working", "in 2017",
        "along with college", "in one month", "from scratch", "as a working professional",
        "as an average student", "in the first attempt", "while in college",
    ),
    "buy": (
        "in 2017", "in India", "right now", "for a student", "for everyday use", "for gaming",
        "for photography", "at this price", "for a college student", "for programming",
    ),
    "finance": (
        "in 2017", "in India", "right now", "with little money", "for the long term",
        "as a student", "with 10,000 rupees", "with $1000", "for retirement", "as a beginner",
    ),
    "self": (
        "every day", "as a student", "at work", "in life", "when I feel lazy", "during exams",
        "at 25", "after a breakup", "as an introvert", "while working from home",
    ),
    "money": (
        "as a student", "in India", "without investment", "from home", "in 2017",
        "every month", "as a housewife", "in my free time", "with a low salary",
    ),
    "pet": ("in an apartment", "in India", "at home", "as a first-time owner", "with kids"),
    "wild": ("in captivity", "in the wild", "as pets", "on average"),
    "watch": ("in 2017", "now", "in one weekend", "with family", "for the second time"),
    "uni": (
        "as an international student", "as an Indian student", "for a master's degree",
        "for a PhD", "with a low GPA", "for undergrad", "in 2017", "from India",
    ),
    "meaning": ("in English", "in Hindi", "in slang", "on social media", "in simple words",
                "in a text message"),
    "usage": ("in English", "in formal writing", "in a sentence", "in British English",
              "in American English"),
    "opinion": ("as a leader", "as a person", "as a role model"),
    "sport": ("as an adult", "at 25", "in India", "with no experience", "without a coach"),
    "study": ("as a beginner", "quickly", "on my own", "for exams", "in college",
              "in one month", "for self-study", "for a complete beginner"),
    "lang_choice": ("as a beginner", "in 2017", "as my first language", "for getting a job",
                    "as a student", "for a career in software"),
    "jobs": ("in India", "in 2017", "in the US", "as a fresher", "in Europe", "in Bangalore"),
}


@dataclass(frozen=True)
class _Intent:
    name: str
    group: str
    weight: float
    cat_a: str | None
    cat_b: str | None  # for "confusable" (pairs) both slots come from one item
    mods: str | None
    templates: tuple[str, ...]
    symmetric: bool = False  # {a} and {b} may swap in a paraphrase


def _i(name: str, group: str, weight: float, cat_a: str | None, cat_b: str | None,
       mods: str | None, *templates: str, symmetric: bool = False) -> _Intent:
    return _Intent(name, group, weight, cat_a, cat_b, mods, tuple(templates), symmetric)


# Each intent's templates are paraphrases of each other: same intent + same fillers = duplicate.
_INTENTS: tuple[_Intent, ...] = (
    # programming
    _i("learn_lang", "prog", 3.0, "lang", None, "learn",
       "How do I learn {a}?", "What is the best way to learn {a}?",
       "How can I start learning {a}?", "How should I go about learning {a}?",
       "How do I get started with {a}?", "What is the most effective way to learn {a}?"),
    _i("lang_history", "prog", 1.0, "lang", None, None,
       "What is the history of {a}?", "How was {a} created?", "Who created {a} and why?",
       "How did the {a} programming language come about?"),
    _i("lang_uses", "prog", 1.2, "lang", None, "time",
       "What is {a} used for?", "What can I build with {a}?",
       "What are the main applications of {a}?", "What kind of projects is {a} good for?"),
    _i("lang_jobs", "prog", 1.0, "lang", None, "jobs",
       "Is it easy to get a job with {a} skills?",
       "What is the job market like for {a} developers?",
       "Are there many jobs for {a} programmers?",
       "How good are the career prospects for {a} developers?"),
    _i("lang_vs", "prog", 1.2, "lang", "lang", "lang_choice",
       "Should I learn {a} or {b}?", "Which should I learn first, {a} or {b}?",
       "{a} or {b}: which language should I learn first?",
       "Is it better to learn {a} or {b} as a first language?", symmetric=True),
    _i("lang_diff", "prog", 1.0, "lang", "lang", None,
       "What is the difference between {a} and {b}?", "How is {a} different from {b}?",
       "What are the main differences between {a} and {b}?", "In what ways do {a} and {b} differ?",
       symmetric=True),
    _i("lang_books", "prog", 0.8, "lang", None, "study",
       "What are the best books to learn {a}?", "Which books should I read to learn {a}?",
       "Can you recommend a good book on {a}?", "What is the best book for {a} programming?"),
    _i("lang_worth", "prog", 0.8, "lang", None, "time",
       "Is {a} worth learning?", "Is it worth learning {a}?",
       "Does it still make sense to learn {a}?", "Is learning {a} a waste of time?"),
    # human languages
    _i("learn_hlang", "hlang", 1.2, "hlang", None, "learn",
       "How can I learn to speak {a} fluently?", "What is the best way to become fluent in {a}?",
       "How do I become fluent in {a}?", "What is the fastest way to learn to speak {a}?"),
    _i("hlang_hard", "hlang", 0.8, "hlang", None, None,
       "Is {a} hard to learn for English speakers?",
       "How difficult is {a} for a native English speaker?",
       "How hard is it for an English speaker to learn {a}?",
       "Is {a} a difficult language for English speakers?"),
    _i("hlang_where", "hlang", 0.6, "hlang", None, "time",
       "In which countries is {a} spoken?", "Where is {a} spoken?",
       "Which countries speak {a}?", "In what parts of the world do people speak {a}?"),
    # countries
    _i("capital", "geo", 1.4, "country", None, None,
       "What is the capital of {a}?", "Which city is the capital of {a}?",
       "What is the capital city of {a}?", "What's the capital of {a}?",
       "Can you tell me the capital of {a}?"),
    _i("population", "geo", 0.8, "country", None, "time",
       "What is the population of {a}?", "How many people live in {a}?",
       "How many inhabitants does {a} have?", "What is the current population of {a}?"),
    _i("country_language", "geo", 0.8, "country", None, None,
       "What language is spoken in {a}?", "What languages do people speak in {a}?",
       "Which language do people in {a} speak?", "What do people in {a} speak?"),
    _i("country_history", "geo", 0.8, "country", None, None,
       "What is the history of {a}?", "Can someone summarize the history of {a}?",
       "What are the most important events in the history of {a}?",
       "How did {a} become the country it is today?"),
    _i("country_safe", "geo", 0.8, "country", None, "travel",
       "Is {a} safe for tourists?", "Is it safe to travel to {a}?",
       "How safe is {a} for travellers?", "Is {a} a safe country to visit?"),
    _i("visit_country", "geo", 1.0, "country", None, "travel",
       "What are the best places to visit in {a}?", "Which places should I visit in {a}?",
       "What are the must-see places in {a}?", "What are the top tourist attractions in {a}?"),
    _i("immigrate", "geo", 1.0, "country", None, "visa",
       "How can I immigrate to {a}?", "What is the process to move to {a} permanently?",
       "How do I get permanent residency in {a}?", "What is the easiest way to immigrate to {a}?"),
    _i("work_visa", "geo", 0.8, "country", None, "visa",
       "How do I get a work visa for {a}?", "What is the process for getting a work permit in {a}?",
       "How can a foreigner get a work visa in {a}?",
       "How difficult is it to get a work visa for {a}?"),
    _i("country_famous", "geo", 0.6, "country", None, None,
       "What is {a} famous for?", "What is {a} known for?", "Why is {a} famous?",
       "What makes {a} famous?"),
    # cities
    _i("cost_living", "city", 1.0, "city", None, "living",
       "What is the cost of living in {a}?", "How expensive is it to live in {a}?",
       "How much does it cost to live in {a}?", "Is {a} an expensive city to live in?"),
    _i("visit_city", "city", 1.0, "city", None, "travel",
       "What are the best places to visit in {a}?", "What should I see in {a}?",
       "What are the top things to do in {a}?", "What are the best tourist spots in {a}?"),
    _i("food_city", "city", 0.7, "city", None, None,
       "What are the best restaurants in {a}?", "Where can I find good food in {a}?",
       "Which restaurants in {a} are worth trying?", "Where should I eat in {a}?"),
    _i("live_city", "city", 0.7, "city", None, "living",
       "Is {a} a good place to live?", "What is it like to live in {a}?",
       "How is life in {a}?", "Would you recommend living in {a}?"),
    _i("coaching", "city", 0.8, "exam", "city", None,
       "Which is the best coaching institute for {a} in {b}?",
       "What is the best {a} coaching centre in {b}?", "Which {a} coaching in {b} is the best?",
       "Can anyone suggest a good coaching institute for {a} in {b}?"),
    _i("price_in", "tech", 0.7, "product", "city", None,
       "What is the price of the {a} in {b}?", "How much does the {a} cost in {b}?",
       "What does the {a} cost in {b}?", "How much will I have to pay for the {a} in {b}?"),
    # exams
    _i("prepare_exam", "exam", 1.6, "exam", None, "exam",
       "How should I prepare for {a}?", "What is the best strategy to prepare for {a}?",
       "How do I prepare for the {a} exam?", "What is the best way to crack {a}?",
       "How can I prepare for {a} effectively?"),
    _i("exam_books", "exam", 0.8, "exam", None, None,
       "What are the best books for {a} preparation?", "Which books should I study for {a}?",
       "Which books are recommended for {a}?", "What study material should I use for {a}?"),
    _i("exam_hours", "exam", 0.7, "exam", None, None,
       "How many hours a day should I study for {a}?",
       "How much time do I need to study daily for {a}?",
       "How many hours of study per day are needed to crack {a}?",
       "How many hours should I put in every day for {a}?"),
    _i("exam_score", "exam", 0.7, "exam", None, None,
       "What is a good score in {a}?", "What score is considered good in {a}?",
       "What is a good {a} score?", "How much should I score in {a} to be considered good?"),
    # health
    _i("lose_weight", "fitness", 0.45, None, None, "fitness",
       "How can I lose weight fast?", "What are quick ways to lose weight?",
       "What is the fastest way to lose weight?", "How do I lose weight quickly?",
       "What are the best ways to lose weight?"),
    _i("gain_weight", "fitness", 0.2, None, None, "fitness",
       "How can I gain weight fast?", "What are quick ways to gain weight?",
       "What is the fastest way to gain weight?", "How do I put on weight quickly?",
       "What should I do to gain weight?"),
    _i("belly_fat", "fitness", 0.2, None, None, "fitness",
       "How do I lose belly fat?", "What is the best way to get rid of belly fat?",
       "How can I reduce my belly fat?", "What exercises help burn belly fat?"),
    _i("build_muscle", "fitness", 0.2, None, None, "fitness",
       "How can I build muscle fast?", "What is the best way to gain muscle mass?",
       "How do I build muscle quickly?", "What should I do to build more muscle?"),
    _i("sleep", "fitness", 0.2, None, None, "fitness",
       "How can I fall asleep faster?", "What can I do to fall asleep quickly?",
       "How do I fall asleep fast at night?", "What are some tips to fall asleep faster?"),
    _i("symptoms", "health", 1.2, "disease", None, "medical",
       "What are the symptoms of {a}?", "What are the early signs of {a}?",
       "How do I know if I have {a}?", "What are the warning signs of {a}?"),
    _i("cure", "health", 1.2, "disease", None, "treatment",
       "How can {a} be cured?", "What is the best treatment for {a}?",
       "What is the most effective cure for {a}?", "How is {a} treated?"),
    _i("causes", "health", 0.8, "disease", None, "medical",
       "What causes {a}?", "What are the main causes of {a}?", "Why do people get {a}?",
       "What is the cause of {a}?"),
    _i("food_healthy", "food", 1.0, "ingredient", None, "food",
       "Is {a} healthy?", "Is eating {a} good for you?", "Is {a} good for your health?",
       "Is it healthy to eat {a}?"),
    _i("ingredient_calories", "food", 0.6, "ingredient", None, None,
       "How many calories are in {a}?", "What is the calorie count of {a}?",
       "How many calories does {a} have?", "How much energy does {a} contain?"),
    _i("make_food", "food", 1.0, "dish", None, "cook",
       "How do I make {a} at home?", "What is the best recipe for {a}?",
       "How can I cook {a} at home?", "What is an easy way to make {a}?"),
    _i("dish_calories", "food", 0.5, "dish", None, None,
       "How many calories are there in {a}?", "What is the calorie content of {a}?",
       "How fattening is {a}?", "How many calories do {a} have?"),
    # career
    _i("become", "career", 1.6, "career", None, "career",
       "How do I become {a}?", "What does it take to become {a}?",
       "What should I do to become {a}?", "What are the steps to become {a}?",
       "How can I become {a}?"),
    _i("salary", "career", 1.0, "career", None, "career",
       "How much does {a} earn?", "What is the average salary of {a}?",
       "How much money does {a} make?", "What is the typical income of {a}?"),
    _i("career_good", "career", 0.8, "career", None, None,
       "Is being {a} a good career choice?", "Is it worth becoming {a}?",
       "Would you recommend a career as {a}?", "Is working as {a} a good career?"),
    _i("job_company", "company", 1.2, "company", None, "company",
       "How do I get a job at {a}?", "How can I get hired by {a}?",
       "What is the best way to get a job at {a}?", "What does it take to get hired at {a}?"),
    _i("work_company", "company", 1.0, "company", None, None,
       "What is it like to work at {a}?", "How is the work culture at {a}?",
       "What is the work environment like at {a}?", "How is working at {a}?"),
    _i("interview_company", "company", 1.0, "company", None, "company",
       "What is the interview process at {a}?", "How does the {a} interview process work?",
       "What are the steps in the {a} hiring process?",
       "What rounds are there in the {a} interview process?"),
    _i("company_money", "company", 0.6, "company", None, None,
       "How does {a} make money?", "What is the business model of {a}?",
       "Where does {a} get its revenue from?", "How does {a} earn its revenue?"),
    # apps
    _i("delete_account", "app", 1.0, "app", None, None,
       "How do I delete my {a} account?", "How can I permanently delete my {a} account?",
       "What is the way to delete my {a} account permanently?",
       "How do I remove my {a} account for good?"),
    _i("followers", "app", 0.8, "app", None, "time",
       "How can I get more followers on {a}?", "How do I increase my followers on {a}?",
       "What is the best way to gain {a} followers?",
       "How do people get so many followers on {a}?"),
    _i("hacked", "app", 0.7, "app", None, None,
       "My {a} account was hacked. How do I recover it?", "How do I recover a hacked {a} account?",
       "What should I do if my {a} account got hacked?",
       "How can I get back my hacked {a} account?"),
    _i("app_money", "app", 0.6, "app", None, None,
       "How does {a} make its money?", "What is {a}'s business model?",
       "How does {a} earn revenue?",
       "Where does {a}'s revenue come from?"),
    # tech products
    _i("worth_buying", "tech", 1.0, "product", None, "buy",
       "Is the {a} worth buying?", "Should I buy the {a}?", "Is the {a} worth the money?",
       "Would you recommend buying the {a}?"),
    _i("product_vs", "tech", 0.9, "product", "product", "buy",
       "Which is better, the {a} or the {b}?", "{a} vs {b}: which one should I buy?",
       "Should I buy the {a} or the {b}?", "Which one is better to buy: {a} or {b}?",
       symmetric=True),
    _i("battery", "tech", 0.6, "product", None, None,
       "How can I improve the battery life of my {a}?", "How do I make my {a} battery last longer?",
       "How can I save battery on my {a}?",
       "What are some tips to extend battery life on the {a}?"),
    # skills
    _i("learn_instrument", "skill", 1.0, "instrument", None, "learn",
       "How do I learn to play the {a}?", "What is the best way to learn the {a}?",
       "How can I teach myself to play the {a}?", "How should a beginner start learning the {a}?"),
    _i("instrument_adult", "skill", 0.5, "instrument", None, None,
       "Am I too old to learn the {a}?", "Can an adult learn to play the {a}?",
       "Is it possible to learn the {a} as an adult?",
       "Is it too late to learn the {a} as an adult?"),
    _i("subject_good", "skill", 1.0, "subject", None, "study",
       "How can I get better at {a}?", "How do I improve my {a} skills?",
       "What is the best way to become good at {a}?", "How do I get good at {a}?"),
    _i("subject_books", "skill", 0.8, "subject", None, "study",
       "What are the best books on {a}?", "Which books should I read to understand {a}?",
       "What is a good introductory book on {a}?", "Can you recommend some good books about {a}?"),
    _i("subject_what", "skill", 0.8, "subject", None, None,
       "What is {a} in simple terms?", "Can someone explain {a} in simple words?",
       "How would you explain {a} to a child?", "What exactly is {a}?"),
    _i("sport_start", "sport", 0.7, "sport", None, "sport",
       "How do I get started with {a}?", "How can I start playing {a}?",
       "What is the best way for a beginner to start {a}?", "How should I begin playing {a}?"),
    _i("sport_best", "sport", 0.7, "sport", None, None,
       "Who is the greatest {a} player of all time?", "Who is the best {a} player ever?",
       "Who is considered the greatest {a} player in history?",
       "Which {a} player is the best of all time?"),
    _i("sport_better", "sport", 0.6, "sport", None, "sport",
       "How do I get better at {a}?", "How can I improve my {a} skills?",
       "What is the best way to improve at {a}?", "How can I become a better {a} player?"),
    # people
    _i("person_famous", "people", 0.8, "person", None, None,
       "Why is {a} famous?", "What is {a} famous for?", "What is {a} known for?",
       "What made {a} famous?"),
    _i("person_opinion", "people", 1.0, "person", None, "opinion",
       "What do you think of {a}?", "What is your opinion of {a}?", "How do you feel about {a}?",
       "What are your views on {a}?"),
    _i("person_lesson", "people", 0.6, "person", None, None,
       "What can we learn from {a}?", "What lessons can be learned from the life of {a}?",
       "What are the most important lessons from {a}'s life?",
       "What can one learn from {a}'s life?"),
    # animals
    _i("animal_life", "animal", 0.6, "animal", None, "wild",
       "How long do {a} live?", "What is the lifespan of {a}?",
       "What is the average lifespan of {a}?", "How many years do {a} usually live?"),
    _i("animal_pet", "animal", 0.6, "animal", None, "pet",
       "Are {a} good pets?", "Can I keep {a} as pets?", "Is it a good idea to keep {a} as pets?",
       "Do {a} make good pets?"),
    _i("animal_eat", "animal", 0.5, "animal", None, "wild",
       "What do {a} eat?", "What is the diet of {a}?", "What do {a} usually eat?",
       "What kind of food do {a} eat?"),
    # entertainment
    _i("worth_watching", "show", 0.8, "show", None, "watch",
       "Is {a} worth watching?", "Should I watch {a}?", "Is it worth watching {a}?",
       "Would you recommend watching {a}?"),
    _i("similar_to", "show", 0.6, "show", None, None,
       "What should I watch if I liked {a}?", "What are some titles similar to {a}?",
       "Can you recommend something like {a}?", "What else should I watch after {a}?"),
    _i("ending", "show", 0.5, "show", None, None,
       "What is the meaning of the ending of {a}?", "Can someone explain the ending of {a}?",
       "How should the ending of {a} be interpreted?", "What really happened at the end of {a}?"),
    # finance
    _i("invest_good", "finance", 1.0, "investment", None, "finance",
       "Is {a} a good investment?", "Is it wise to invest in {a}?", "Should I invest in {a}?",
       "Is investing in {a} a good idea?"),
    _i("invest_how", "finance", 0.8, "investment", None, "finance",
       "How do I invest in {a}?", "How can a beginner start investing in {a}?",
       "What is the best way to start investing in {a}?", "How can I put my money into {a}?"),
    _i("money_online", "money", 0.3, None, None, "money",
       "How can I make money online?", "What are some ways to earn money online?",
       "How do I earn money from home using the internet?",
       "What are legit ways to make money online?"),
    _i("save_money", "money", 0.2, None, None, "money",
       "How can I save money?", "What are good tips to save money?",
       "How do I save more money?", "How do I start saving money?"),
    _i("passive_income", "money", 0.15, None, None, "money",
       "How can I build a passive income?", "What are the best sources of passive income?",
       "How do I create passive income streams?",
       "What are some good ways to earn passive income?"),
    # self-improvement
    _i("motivation", "self", 0.2, None, None, "self",
       "How do I stay motivated?", "How can I keep myself motivated?",
       "What are some ways to stay motivated?", "How do I motivate myself to work hard?"),
    _i("procrastination", "self", 0.2, None, None, "self",
       "How do I stop procrastinating?", "How can I overcome procrastination?",
       "What is the best way to beat procrastination?",
       "How do I get rid of my habit of procrastinating?"),
    _i("confidence", "self", 0.2, None, None, "self",
       "How can I become more confident?", "How do I build self-confidence?",
       "What are ways to improve my self-confidence?",
       "How do I stop being shy and become confident?"),
    _i("focus", "self", 0.2, None, None, "self",
       "How can I improve my concentration?", "How do I focus better?",
       "What are some ways to increase my focus?", "How can I concentrate better?"),
    # universities
    _i("admission", "uni", 1.0, "university", None, "uni",
       "How do I get admission into {a}?", "How can I get into {a}?",
       "What does it take to get admitted to {a}?", "What are the admission requirements for {a}?"),
    _i("uni_life", "uni", 0.7, "university", None, None,
       "What is it like to study at {a}?", "How is student life at {a}?",
       "What is campus life like at {a}?", "How is life as a student at {a}?"),
    # words; these are where double quotes come from, as in the real data
    _i("meaning", "word", 1.2, "word", None, "meaning",
       'What does "{a}" mean?', 'What is the meaning of "{a}"?', 'What does the word "{a}" mean?',
       "What is the meaning of the word {a}?", "What does {a} mean?"),
    _i("word_origin", "word", 0.5, "word", None, None,
       'What is the origin of the word "{a}"?', 'Where does the word "{a}" come from?',
       "What is the etymology of {a}?", "How did the word {a} originate?"),
    _i("usage", "word", 0.5, "confusable", "confusable", "usage",
       'When do you use "{a}" instead of "{b}"?', 'When should I use "{a}" and when "{b}"?',
       'How do I decide between "{a}" and "{b}"?', "How do I know whether to use {a} or {b}?"),
)

# Leading context sentences (some real questions tell a little story first). The {x} slots are
# expanded into many concrete sentences below.
_CTX_SIMPLE = (
    "I am a beginner.", "This might be a silly question.", "I am new to Quora.",
    "I have searched on Google but could not find a good answer.", "Please do not judge me.",
    "I am really confused.", "My friends keep asking me this.", "I need an honest answer.",
    "I have been thinking about this for a long time.", "I am a student.",
    "I am a working professional.", "I am a housewife.", "I am a fresher.",
    "I have very little free time.", "I am on a tight budget.", "I am an introvert.",
    "I recently graduated.", "I just finished my 12th.", "I am from a small town.",
    "I am not good at this.", "I have tried many things already.", "My parents want me to know.",
    "English is not my first language.", "I know this is a common question.",
    "I have read a lot of answers on Quora about this.", "My exams start next month.",
    "I lost my job recently.", "I am 40 and starting over.",
    "My teacher said \"practice makes perfect\".",
)
_CTX_AGE = "I am a {n} year old {occ} from {place}."
_CTX_AGE_N = range(16, 46)
_CTX_OCC = (
    "student", "engineer", "software developer", "teacher", "doctor", "nurse", "housewife",
    "banker", "designer", "freelancer", "accountant", "sales executive", "lawyer",
    "government employee", "college dropout", "businessman", "researcher", "musician",
    "retired army officer", "mechanical engineer", "civil engineer", "MBA student",
    "medical student", "PhD student",
)
_CTX_PLACES = (
    "India", "Pakistan", "Bangladesh", "Nigeria", "Kenya", "the US", "the UK", "Canada",
    "Australia", "Germany", "Brazil", "the Philippines", "Indonesia", "Egypt", "Nepal",
    "Sri Lanka", "a small village", "a small town in Kerala", "Punjab", "Tamil Nadu", "Bihar",
    "Maharashtra", "Texas", "California", "Ontario",
)
_CTX_EXP = "I have {n} years of experience in {field}."
_CTX_FIELDS = (
    "IT", "sales", "marketing", "teaching", "banking", "software testing", "web development",
    "customer support", "finance", "mechanical design", "civil construction", "HR",
    "data entry", "journalism", "the hotel industry", "retail", "the BPO industry",
)
_CTX_YEAR = "I am in the {ord} year of my {degree}."
_CTX_ORD = ("first", "second", "third", "final")
_CTX_DEGREE = (
    "B.Tech", "B.Com", "BSc", "BA", "MBBS", "BBA", "MBA", "M.Tech", "engineering degree",
    "computer science degree", "law degree", "MSc", "BCA", "MCA",
)
_CTX_MOVE = "I live in {city} and I am planning to move to {city2} next year."
_CTX_MOVE_FROM = (
    "Delhi", "Mumbai", "Pune", "Chennai", "Kolkata", "Hyderabad", "a small town", "London",
    "Lagos", "Karachi", "Dhaka", "Toronto",
)
_CTX_MOVE_TO = (
    "Bangalore", "the US", "Canada", "Germany", "Dubai", "Australia", "Singapore", "London",
    "New Zealand", "Mumbai", "Delhi", "Hyderabad",
)
# Long sentences make the long tail of the length distribution.
_CTX_LONG = (
    "I have been trying to figure this out for the past {n} months and I have read many "
    "articles and watched videos, but I still cannot decide what to do.",
    "A friend of mine told me something about this {n} days ago and since then I have been "
    "searching everywhere for a clear explanation without any luck.",
    "I have asked my family, my friends and even my teachers about this, and everyone gives me "
    "a different answer, so I am hoping someone here can help me.",
    "I am {n} years old and I feel like I have wasted a lot of time, so now I want to do things "
    "properly and I would really appreciate some honest guidance.",
    "I spent almost {n} hours on the internet yesterday reading about this topic and the more I "
    "read the more confused I got, because every website says something different.",
)
_CTX_LONG_N = range(2, 31)

_TRAILING = (
    "Please explain in detail.", "Any suggestions?", "Please help.", "Thanks in advance.",
    "I need some advice.", "What do you think?", "Please answer.", "Please suggest.",
    "Any help would be appreciated.", "Please give me some tips.", "Is there any shortcut?",
    "Explain with examples.", "What are your thoughts?", "Please be honest.",
    "Please share your experience.", "I am really confused.", "Kindly help me.",
    "Any advice would be great.", "Please guide me.", "Please reply soon.",
    "I would love to hear from people who have done it.", "Please explain in simple terms.",
    "Links to resources would be helpful.", "Thank you.", "Be brutally honest.",
)


@dataclass(frozen=True)
class _Tables:
    """The vocabulary compiled to arrays so that specs can be drawn with numpy."""

    weights: np.ndarray  # intent sampling probabilities
    group: np.ndarray  # topic group index per intent
    n_tpl: np.ndarray  # templates per intent
    tpl_off: np.ndarray  # offset of an intent's first template in `templates`
    cat_a: np.ndarray  # category index of slot a, -1 for none
    cat_b: np.ndarray  # category index of slot b, -1 for none (or for paired slots)
    paired: np.ndarray  # bool: slot b is the second half of slot a's pair item
    symmetric: np.ndarray
    mod_off: np.ndarray  # offset into `mods`, -1 when the intent takes no modifier
    n_mod: np.ndarray
    partners: np.ndarray  # [intent, k] candidate intents for a topical negative
    n_partners: np.ndarray
    cat_size: np.ndarray
    cat_off: np.ndarray  # offset of a category's first item in `fill_a`/`fill_b`
    templates: list[str]
    fill_a: list[str]  # item text (first half for pairs); ends with "" so index -1 is empty
    fill_b: list[str]  # item text (second half for pairs); ends with ""
    mods: list[str]  # ends with ""
    contexts: list[str]  # ends with ""
    ctx_fam_off: np.ndarray  # offset of each context family; the last family is long sentences
    ctx_fam_size: np.ndarray
    trailing: list[str]  # ends with ""


@functools.cache
def _tables() -> _Tables:
    cat_names = list(_CATEGORIES)
    cat_index = {c: k for k, c in enumerate(cat_names)}
    _check_vocabulary()

    fill_a: list[str] = []
    fill_b: list[str] = []
    cat_off, cat_size = [], []
    for name in cat_names:
        items = _CATEGORIES[name]
        cat_off.append(len(fill_a))
        cat_size.append(len(items))
        for item in items:
            fill_a.append(item[0] if isinstance(item, tuple) else item)
            fill_b.append(item[1] if isinstance(item, tuple) else item)
    fill_a.append("")
    fill_b.append("")

    mod_names = list(_MODS)
    mods: list[str] = []
    mod_start = {}
    for name in mod_names:
        mod_start[name] = len(mods)
        mods.extend(_MODS[name])
    mods.append("")

    templates: list[str] = []
    n = len(_INTENTS)
    n_tpl = np.zeros(n, np.int64)
    tpl_off = np.zeros(n, np.int64)
    cat_a = np.full(n, -1, np.int64)
    cat_b = np.full(n, -1, np.int64)
    paired = np.zeros(n, bool)
    symmetric = np.zeros(n, bool)
    mod_off = np.full(n, -1, np.int64)
    n_mod = np.zeros(n, np.int64)
    weights = np.zeros(n)
    group_names = list(dict.fromkeys(it.group for it in _INTENTS))
    group = np.array([group_names.index(it.group) for it in _INTENTS], np.int64)
    for k, it in enumerate(_INTENTS):
        tpl_off[k] = len(templates)
        n_tpl[k] = len(it.templates)
        templates.extend(it.templates)
        weights[k] = it.weight
        if it.cat_a is not None:
            cat_a[k] = cat_index[it.cat_a]
        if it.cat_b is not None:
            if it.cat_b == it.cat_a and isinstance(_CATEGORIES[it.cat_a][0], tuple):
                paired[k] = True
            else:
                cat_b[k] = cat_index[it.cat_b]
        symmetric[k] = it.symmetric
        if it.mods is not None:
            mod_off[k] = mod_start[it.mods]
            n_mod[k] = len(_MODS[it.mods])

    # Topical negatives: another intent over the same filler category (keeps the filler, so the
    # pair shares its most specific word), else another intent of the same group.
    part_lists = []
    for k, it in enumerate(_INTENTS):
        if it.cat_a is not None:
            cands = [j for j, o in enumerate(_INTENTS) if j != k and o.cat_a == it.cat_a]
        else:
            cands = [j for j, o in enumerate(_INTENTS)
                     if j != k and o.group == it.group and o.cat_a is None]
        if not cands:
            cands = [j for j, o in enumerate(_INTENTS) if j != k and o.group == it.group]
        if not cands:
            raise RuntimeError(f"intent {it.name} has no partner intent for topical negatives")
        part_lists.append(cands)
    width = max(len(p) for p in part_lists)
    partners = np.zeros((n, width), np.int64)
    for k, p in enumerate(part_lists):
        partners[k, : len(p)] = p

    # Context sentences come in families of very different sizes; a family is drawn first so
    # that the big generated families do not drown the hand-written sentences.
    families = [
        list(_CTX_SIMPLE),
        [_CTX_AGE.format(n=a, occ=o, place=p)
         for a in _CTX_AGE_N for o in _CTX_OCC for p in _CTX_PLACES],
        [_CTX_EXP.format(n=y, field=f) for y in range(1, 16) for f in _CTX_FIELDS],
        [_CTX_YEAR.format(ord=o, degree=d) for o in _CTX_ORD for d in _CTX_DEGREE],
        [_CTX_MOVE.format(city=a, city2=b) for a in _CTX_MOVE_FROM for b in _CTX_MOVE_TO if a != b],
        [s.format(n=x) for s in _CTX_LONG for x in _CTX_LONG_N],
    ]
    contexts = [c for fam in families for c in fam] + [""]
    fam_size = np.array([len(f) for f in families], np.int64)
    fam_off = np.concatenate([[0], np.cumsum(fam_size)[:-1]]).astype(np.int64)

    return _Tables(
        weights=weights / weights.sum(), group=group, n_tpl=n_tpl, tpl_off=tpl_off,
        cat_a=cat_a, cat_b=cat_b,
        paired=paired, symmetric=symmetric, mod_off=mod_off, n_mod=n_mod, partners=partners,
        n_partners=np.array([len(p) for p in part_lists], np.int64),
        cat_size=np.array(cat_size, np.int64), cat_off=np.array(cat_off, np.int64),
        templates=templates, fill_a=fill_a, fill_b=fill_b, mods=mods, contexts=contexts,
        ctx_fam_off=fam_off, ctx_fam_size=fam_size, trailing=list(_TRAILING) + [""],
    )


def _check_vocabulary() -> None:
    """Fail loudly on a vocabulary edit that would break the generator's guarantees."""
    seen: dict[str, str] = {}
    for name, items in _CATEGORIES.items():
        if len(items) < 3:
            raise RuntimeError(f"category {name} needs at least 3 items")
        for item in items:
            key = "|".join(item) if isinstance(item, tuple) else item
            if key in seen:
                # A filler in two categories would give one text two meanings.
                raise RuntimeError(f"filler {key!r} is in both {seen[key]} and {name}")
            seen[key] = name
    for it in _INTENTS:
        if len(it.templates) < 2 or len(set(it.templates)) != len(it.templates):
            raise RuntimeError(f"intent {it.name} needs at least 2 distinct templates")
        for t in it.templates:
            if not t.endswith("?"):
                raise RuntimeError(f"template {t!r} must end with '?'")
            if ("{a}" in t) != (it.cat_a is not None) or ("{b}" in t) != (it.cat_b is not None):
                raise RuntimeError(f"template {t!r} does not match the slots of {it.name}")
        if it.mods is not None and it.mods not in _MODS:
            raise RuntimeError(f"intent {it.name} names unknown modifiers {it.mods}")


# A question is a "spec": parallel int arrays; rendering a spec is deterministic, so equal specs
# give equal texts (and equal qids).
_SPEC_KEYS = ("intent", "tpl", "fa", "fb", "mod", "c1", "c2", "c3", "trail", "style")
Spec = dict[str, np.ndarray]


def _pick(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """One uniform integer in [0, size) per element (size >= 1)."""
    return np.minimum((rng.random(sizes.shape[0]) * sizes).astype(np.int64), sizes - 1)


def _pick_except(rng: np.random.Generator, sizes: np.ndarray, old: np.ndarray,
                 other: np.ndarray) -> np.ndarray:
    """Uniform in [0, size) excluding `old` and, where >= 0 and != old, `other`."""
    has_other = (other >= 0) & (other != old)
    k = _pick(rng, sizes - 1 - has_other)
    lo = np.where(has_other, np.minimum(old, other), old)
    hi = np.where(has_other, np.maximum(old, other), np.iinfo(np.int64).max)
    # Shift past the excluded values in increasing order: maps [0, size-#excluded) onto the rest.
    k = k + (k >= lo)
    return k + (k >= hi)


def _fresh_core(rng: np.random.Generator, t: _Tables, intent: np.ndarray) -> Spec:
    """Template, fillers and modifier for given intents, drawn independently."""
    n = intent.shape[0]
    ca, cb = t.cat_a[intent], t.cat_b[intent]
    fa = np.where(ca >= 0, _pick(rng, np.maximum(t.cat_size[ca], 1)), -1)
    fb_any = _pick(rng, np.maximum(t.cat_size[cb], 1))
    # Two slots of one category (Python vs Java) must differ.
    same = (cb >= 0) & (cb == ca)
    fb_same = _pick_except(rng, np.maximum(t.cat_size[cb], 3), fa, np.full(n, -1))
    fb = np.where(cb >= 0, np.where(same, fb_same, fb_any), -1)
    return {
        "intent": intent,
        "tpl": _pick(rng, t.n_tpl[intent]),
        "fa": fa,
        "fb": fb,
        "mod": _fresh_mod(rng, t, intent),
    }


def _fresh_mod(rng: np.random.Generator, t: _Tables, intent: np.ndarray) -> np.ndarray:
    has = (rng.random(intent.shape[0]) < _P_MOD) & (t.n_mod[intent] > 0)
    k = _pick(rng, np.maximum(t.n_mod[intent], 1))
    return np.where(has, k, -1)


def _fresh_options(rng: np.random.Generator, t: _Tables, n: int) -> Spec:
    """Context sentences, trailing sentence and style: independent of the question's meaning."""
    n_ctx = rng.choice(len(_CTX_COUNTS), size=n, p=_CTX_COUNTS / _CTX_COUNTS.sum())

    def sentence(family: np.ndarray) -> np.ndarray:
        return t.ctx_fam_off[family] + _pick(rng, t.ctx_fam_size[family])

    n_short = t.ctx_fam_size.shape[0] - 1
    short = [sentence(rng.choice(n_short, size=n, p=_CTX_FAMILIES)) for _ in range(2)]
    long_ = [sentence(np.full(n, n_short)) for _ in range(2)]
    # One or two short sentences; from three on, long story sentences make the length tail.
    c1 = np.where(n_ctx >= 1, short[0], -1)
    c2 = np.where(n_ctx >= 4, long_[1], np.where(n_ctx >= 2, short[1], -1))
    c3 = np.where(n_ctx >= 3, long_[0], -1)
    trail = np.where(rng.random(n) < _P_TRAIL, _pick(rng, np.full(n, len(_TRAILING))), -1)
    style = rng.choice(len(_STYLES), size=n, p=_STYLES / _STYLES.sum())
    return {"c1": c1, "c2": c2, "c3": c3, "trail": trail, "style": style}


def _fresh(rng: np.random.Generator, t: _Tables, n: int) -> Spec:
    intent = rng.choice(t.weights.shape[0], size=n, p=t.weights)
    return _fresh_core(rng, t, intent) | _fresh_options(rng, t, n)


def _take(spec: Spec, idx: np.ndarray) -> Spec:
    return {k: v[idx] for k, v in spec.items()}


def _where(mask: np.ndarray, a: Spec, b: Spec) -> Spec:
    return {k: np.where(mask, a[k], b[k]) for k in _SPEC_KEYS}


# Pair kinds for question2.
_DUP, _SWAP_FILLER, _SWAP_INTENT, _RANDOM = 0, 1, 2, 3


def _partner(rng: np.random.Generator, t: _Tables, q1: Spec, kind: np.ndarray) -> Spec:
    """question2 specs for question1 specs `q1`, one pair kind per row."""
    n = kind.shape[0]
    intent, tpl, fa, fb = q1["intent"], q1["tpl"], q1["fa"], q1["fb"]
    ntpl = t.n_tpl[intent]
    other_tpl = (tpl + 1 + _pick(rng, ntpl - 1)) % ntpl
    keep_mod = rng.random(n) < 0.5
    mod_same_intent = np.where(keep_mod, q1["mod"], _fresh_mod(rng, t, intent))
    options = _fresh_options(rng, t, n)

    # Duplicate: same intent and fillers, a different paraphrase template.
    swap = t.symmetric[intent] & (rng.random(n) < 0.5)
    dup = {"intent": intent, "tpl": other_tpl, "fa": np.where(swap, fb, fa),
           "fb": np.where(swap, fa, fb), "mod": mod_same_intent} | options

    # Hard negative: same intent (often the same template), one filler replaced.
    ca, cb = t.cat_a[intent], t.cat_b[intent]
    use_b = (cb >= 0) & (rng.random(n) < 0.5)
    same_cat = (cb >= 0) & (cb == ca)
    new_a = _pick_except(rng, np.maximum(t.cat_size[ca], 3), fa, np.where(same_cat, fb, -1))
    new_b = _pick_except(rng, np.maximum(t.cat_size[cb], 3), fb, np.where(same_cat, fa, -1))
    hard = {"intent": intent, "tpl": np.where(rng.random(n) < 0.5, tpl, other_tpl),
            "fa": np.where(use_b, fa, new_a), "fb": np.where(use_b, new_b, fb),
            "mod": mod_same_intent} | options

    # Topical negative: a partner intent; fillers of a matching category are kept.
    new_intent = t.partners[intent, _pick(rng, t.n_partners[intent])]
    core = _fresh_core(rng, t, new_intent)
    nca, ncb = t.cat_a[new_intent], t.cat_b[new_intent]
    keep_a = (nca >= 0) & (nca == ca)
    keep_b = (ncb >= 0) & (ncb == cb)
    ta = np.where(keep_a, fa, core["fa"])
    tb = np.where(keep_b, fb, core["fb"])
    clash = (ncb >= 0) & (ncb == nca) & (ta == tb)
    tb = np.where(clash, _pick_except(rng, np.maximum(t.cat_size[ncb], 3), ta, np.full(n, -1)), tb)
    topical = core | {"fa": ta, "fb": tb} | options

    unrelated = _fresh(rng, t, n)

    # Intents without a filler cannot swap one: they take a topical negative instead.
    kind = np.where((kind == _SWAP_FILLER) & (ca < 0), _SWAP_INTENT, kind)
    out = _where(kind == _DUP, dup, unrelated)
    out = _where(kind == _SWAP_FILLER, hard, out)
    return _where(kind == _SWAP_INTENT, topical, out)


def _render(t: _Tables, s: Spec) -> list[str]:
    """Texts for specs: context sentences, the filled template with its modifier, a trailer."""
    g_tpl = (t.tpl_off[s["intent"]] + s["tpl"]).tolist()
    ca, cb = t.cat_a[s["intent"]], t.cat_b[s["intent"]]
    a_idx = np.where(ca >= 0, t.cat_off[ca] + s["fa"], -1)
    # Paired categories take both halves from the slot-a item.
    b_idx = np.where(t.paired[s["intent"]], a_idx, np.where(cb >= 0, t.cat_off[cb] + s["fb"], -1))
    m_idx = np.where(s["mod"] >= 0, t.mod_off[s["intent"]] + s["mod"], -1)
    templates, fill_a, fill_b, mods = t.templates, t.fill_a, t.fill_b, t.mods
    contexts, trailing = t.contexts, t.trailing
    out = []
    for g, a, b, m, c1, c2, c3, tr, st in zip(
        g_tpl, a_idx.tolist(), b_idx.tolist(), m_idx.tolist(), s["c1"].tolist(),
        s["c2"].tolist(), s["c3"].tolist(), s["trail"].tolist(), s["style"].tolist(),
    ):
        core = templates[g].format(a=fill_a[a], b=fill_b[b])  # index -1 is the "" sentinel
        if m >= 0:
            core = f"{core[:-1]} {mods[m]}?"
        if st == 2:
            core = core[:-1]
        parts = [contexts[c1], contexts[c2], contexts[c3], core, trailing[tr]]
        text = " ".join(p for p in parts if p)
        if st == 1:
            text = text.lower()
        elif st == 3:
            text = text[0].lower() + text[1:]
        out.append(text)
    return out


def _check_rows(rows: int) -> None:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ConfigError(f"rows must be a whole number of at least 1, got {rows!r}")


def generate_pairs(rows: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic Quora Question Pairs table with the release's columns and dtypes."""
    _check_rows(rows)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative whole number, got {seed!r}")
    rows = int(rows)
    t = _tables()
    rng = np.random.default_rng(seed)

    q1 = _fresh(rng, t, rows)
    # Re-asked questions: row i copies question1 of a uniformly chosen earlier row; following the
    # pointers to a fresh root makes copies of copies resolve to one spec (one text).
    reuse = rng.random(rows) < _REUSE
    reuse[0] = False
    src = np.where(reuse, (rng.random(rows) * np.arange(rows)).astype(np.int64), np.arange(rows))
    while True:
        nxt = src[src]
        if np.array_equal(nxt, src):
            break
        src = nxt
    q1 = _take(q1, src)

    dup = rng.random(rows) < _DUPLICATE_SHARE
    u = rng.random(rows)
    kind = np.where(dup, _DUP, np.where(u < _NEG_SWAP_FILLER, _SWAP_FILLER,
                                        np.where(u < _NEG_SWAP_FILLER + _NEG_SWAP_INTENT,
                                                 _SWAP_INTENT, _RANDOM)))
    q2 = _partner(rng, t, q1, kind)
    text1 = np.array(_render(t, q1), dtype=object)
    text2 = np.array(_render(t, q2), dtype=object)
    # Redraw question2 where the draw went wrong: equal to question1, an "unrelated" question
    # from question1's own topic group (it could be a paraphrase, i.e. a mislabelled duplicate),
    # or a pair already asked in an earlier row (the release has no repeated pairs; repeats
    # would also leak between train and test). Only rows still wrong are redrawn each round;
    # texts are compared through integer codes so that a round costs O(rows) in numpy.
    codes, uniques = pd.factorize(np.concatenate([text1, text2]), sort=False)
    code_of = {text: k for k, text in enumerate(uniques.tolist())}
    c1, c2 = codes[:rows].astype(np.int64), codes[rows:].astype(np.int64)
    group = t.group
    for _ in range(_MAX_REDRAWS):
        related = (kind == _RANDOM) & (group[q1["intent"]] == group[q2["intent"]])
        key = (np.minimum(c1, c2) << 32) | np.maximum(c1, c2)
        repeated = pd.Series(key).duplicated(keep="first").to_numpy()
        bad = np.flatnonzero((c1 == c2) | related | repeated)
        if bad.size == 0:
            break
        redo = _partner(rng, t, _take(q1, bad), kind[bad])
        for k in _SPEC_KEYS:
            q2[k][bad] = redo[k]
        new_texts = _render(t, redo)
        text2[bad] = new_texts
        c2[bad] = [code_of.setdefault(x, len(code_of)) for x in new_texts]
    if (c1 == c2).any() or ((kind == _RANDOM) & (group[q1["intent"]] == group[q2["intent"]])).any():
        raise RuntimeError("could not draw distinct, correctly labelled question pairs")

    flip = rng.random(rows) < _SWAP_COLUMNS
    text1, text2 = np.where(flip, text2, text1), np.where(flip, text1, text2)

    # qids in order of first appearance, row by row (row 0 gets 1 and 2, like the release).
    both = np.empty(2 * rows, dtype=object)
    both[0::2], both[1::2] = text1, text2
    codes, _ = pd.factorize(both, sort=False)
    codes = codes.astype(np.int64) + 1
    return pd.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "qid1": codes[0::2],
        "qid2": codes[1::2],
        # Plain lists: pandas infers the same text dtype as read_csv does for these columns.
        "question1": text1.tolist(),
        "question2": text2.tolist(),
        "is_duplicate": dup.astype(np.int64),
    })


def write_demo_tsv(path: Path, rows: int = FULL_ROWS, seed: int = 0) -> dict:
    """Write a synthetic release to `path` atomically; return its path, rows, duplicates, sha256."""
    _check_rows(rows)
    path = Path(path)
    df = generate_pairs(rows, seed)
    buf = io.StringIO()
    # The release is CSV with tabs: minimal quoting, doubled inner quotes, "\n" line ends.
    df.to_csv(buf, sep="\t", index=False, quoting=csv.QUOTE_MINIMAL, quotechar='"',
              doublequote=True, lineterminator="\n")
    data = buf.getvalue().encode("utf-8")
    atomic_write_bytes(path, data)
    digest = sha256_file(path)
    if digest != hashlib.sha256(data).hexdigest():  # pragma: no cover - disk corruption
        raise OSError(f"{path} does not hold what was written")
    return {
        "path": str(path),
        "rows": int(len(df)),
        "duplicates": int(df["is_duplicate"].sum()),
        "sha256": digest,
    }
