"""An evaluation set for search over image captions: word search against meaning (sentence-embedding) search.
CAPTIONS are written the way BLIP-base captions photos; each of QUERIES uses other words than the captions it should
find (synonyms, paraphrases, broader or narrower words) and names them by index. Used by tests/ and bench/search.py
to report recall@5 and MRR.
"""

from __future__ import annotations

__all__ = ["CAPTIONS", "QUERIES"]

CAPTIONS: tuple[str, ...] = (
    # cats
    "a cat laying on a couch",  # 0
    "two cats sleeping on a bed",  # 1
    "a black and white cat sitting on a window sill",  # 2
    "a cat sitting on top of a laptop keyboard",  # 3
    "a small kitten playing with a ball of yarn",  # 4
    "an orange cat looking out of a window",  # 5
    # dogs
    "a dog laying on a couch",  # 6
    "a dog running on the beach",  # 7
    "a puppy playing in the sand",  # 8
    "a brown dog laying on the grass",  # 9
    "a man walking a dog on a leash",  # 10
    "a dog catching a frisbee in a park",  # 11
    "a small dog sitting in the back seat of a car",  # 12
    "two dogs playing in the snow",  # 13
    "there is a dog that is sitting on the floor",  # 14
    # food and drink
    "a plate of food with broccoli and rice",  # 15
    "a pizza sitting on top of a wooden table",  # 16
    "a bowl of soup with a spoon",  # 17
    "a sandwich and french fries on a plate",  # 18
    "a bowl of fruit on a kitchen counter",  # 19
    "a close up of a bunch of bananas",  # 20
    "a birthday cake with candles on it",  # 21
    "a cup of coffee on a table next to a laptop",  # 22
    "a plate of pasta with tomato sauce",  # 23
    "a hamburger and a drink on a table",  # 24
    "there is a plate of food that is on a table",  # 25
    # vehicles
    "a red car parked in front of a building",  # 26
    "a white car driving down a road",  # 27
    "a blue truck parked on the side of the street",  # 28
    "a motorcycle parked in a parking lot",  # 29
    "a man riding a bike down a street",  # 30
    "a bus driving down a city street",  # 31
    "a yellow taxi cab on a busy street",  # 32
    "a woman riding a bike on a dirt road",  # 33
    "a row of bikes parked next to each other",  # 34
    "a fire hydrant on the side of a street",  # 35
    "a stop sign on the corner of a street",  # 36
    # beaches, sea and boats
    "a group of people standing on a beach",  # 37
    "a beach with palm trees and blue water",  # 38
    "a person surfing on a wave in the ocean",  # 39
    "a boat on a lake with mountains in the background",  # 40
    "a sailboat in the water at sunset",  # 41
    "a lighthouse on a rocky coast",  # 42
    "a couple walking on the beach at sunset",  # 43
    "a small boat docked at a pier",  # 44
    # mountains, forests and fields
    "a mountain covered in snow",  # 45
    "a man standing on top of a mountain",  # 46
    "a river running through a forest",  # 47
    "a waterfall in the middle of a forest",  # 48
    "a field of green grass with trees in the background",  # 49
    "a view of a valley with mountains in the distance",  # 50
    "a person walking on a trail in the woods",  # 51
    # cities
    "a view of a city at night",  # 52
    "a clock tower in the middle of a city",  # 53
    "a crowd of people walking down a city street",  # 54
    "a bridge over a river in a city",  # 55
    "an aerial view of a city with tall buildings",  # 56
    "a city skyline at sunset",  # 57
    "there is a large building with a clock on it",  # 58
    # children
    "a little girl holding a teddy bear",  # 59
    "a young boy playing with a toy truck",  # 60
    "a baby sleeping in a crib",  # 61
    "two children playing on a playground",  # 62
    "a little boy eating an ice cream cone",  # 63
    "a baby sitting in a high chair",  # 64
    # sports
    "a man swinging a tennis racket on a tennis court",  # 65
    "a baseball player swinging a bat at a ball",  # 66
    "a group of men playing soccer on a field",  # 67
    "a man dunking a basketball into a hoop",  # 68
    "a man riding a skateboard down a ramp",  # 69
    "a person skiing down a snowy hill",  # 70
    "a snowboarder flying through the air",  # 71
    "a group of runners running in a race",  # 72
    # weddings
    "a bride and groom standing in front of a church",  # 73
    "a bride and groom cutting a wedding cake",  # 74
    "a bride holding a bouquet of flowers",  # 75
    "a group of people at a wedding reception",  # 76
    "a bride and groom kissing under an arch",  # 77
    # flowers
    "a vase of flowers on a table",  # 78
    "a close up of a pink rose",  # 79
    "a field of sunflowers under a blue sky",  # 80
    "a bunch of red tulips in a garden",  # 81
    "a close up of a white flower",  # 82
    "a bee on a purple flower",  # 83
    # documents
    "a receipt with a lot of writing on it",  # 84
    "a piece of paper with writing on it",  # 85
    "a close up of a receipt",  # 86
    "an open book sitting on top of a table",  # 87
    "a letter with a signature on it",  # 88
    "a business card on a wooden table",  # 89
    "a person holding a passport in their hand",  # 90
    # screens and screenshots
    "a screenshot of a text message",  # 91
    "a screenshot of a web page",  # 92
    "a computer screen with a graph on it",  # 93
    "a cell phone screen showing a map",  # 94
    "a screenshot of a video game",  # 95
    # birds
    "a bird sitting on a tree branch",  # 96
    "a seagull standing on the beach",  # 97
    "a flock of birds flying in the sky",  # 98
    "a duck swimming in a pond",  # 99
    "a colorful parrot sitting on a perch",  # 100
    "an owl sitting in a tree",  # 101
    # snow
    "a house covered in snow",  # 102
    "a person walking in the snow with an umbrella",  # 103
    "a snowman in a front yard",  # 104
    "a forest covered in snow",  # 105
    # sunsets and skies
    "a sunset over the ocean",  # 106
    "the sun is setting over a mountain range",  # 107
    "an orange sky with clouds at sunset",  # 108
    "fireworks lighting up the sky at night",  # 109
    # kitchens and rooms
    "a kitchen with a stove and a refrigerator",  # 110
    "a woman cooking in a kitchen",  # 111
    "a kitchen with white cabinets and a window",  # 112
    "a sink full of dirty dishes",  # 113
    "a bathroom with a toilet and a sink",  # 114
    "a living room with a couch and a tv",  # 115
    "a bedroom with a bed and a lamp",  # 116
    "a teddy bear sitting on a bed",  # 117
    "a christmas tree with lights and ornaments",  # 118
    # offices
    "an office with desks and computers",  # 119
    "a man sitting at a desk using a laptop",  # 120
    "a conference room with a long table and chairs",  # 121
    "a desk with two monitors and a keyboard",  # 122
    # concerts
    "a crowd of people at a concert",  # 123
    "a man playing a guitar on stage",  # 124
    "a band performing on a stage with lights",  # 125
    "a woman singing into a microphone",  # 126
    # trains and planes
    "a train traveling down the tracks",  # 127
    "a train parked at a train station",  # 128
    "a subway car with people sitting in it",  # 129
    "an airplane flying in the sky",  # 130
    "a large jet sitting on a runway",  # 131
    "a view of the wing of an airplane",  # 132
    # horses and other animals
    "a horse standing in a field",  # 133
    "a woman riding a brown horse",  # 134
    "two horses grazing in a pasture",  # 135
    "a man riding a horse on the beach",  # 136
    "a cow standing in a field",  # 137
    "a herd of sheep grazing on a lush green field",  # 138
    "a giraffe standing next to a tree",  # 139
    # people
    "a woman holding an umbrella in the rain",  # 140
    "a man taking a picture of himself",  # 141
    "a group of people sitting around a table eating",  # 142
    "a man in a suit and tie standing in a room",  # 143
)

# (query, indexes into CAPTIONS of every caption a person would accept as a result for it)
QUERIES: tuple[tuple[str, frozenset[int]], ...] = (
    ("kitty", frozenset({0, 1, 2, 3, 4, 5})),
    ("feline snoozing", frozenset({0, 1})),
    ("tabby gazing outside", frozenset({5})),
    ("cat at the window", frozenset({2, 5})),
    ("kitten on a keyboard", frozenset({3})),
    ("house pet on the furniture", frozenset({0, 1, 6})),
    ("canine resting on the sofa", frozenset({6})),
    ("dog on the beach", frozenset({7, 8})),
    ("pup resting on the lawn", frozenset({9})),
    ("someone out with their pooch on a lead", frozenset({10})),
    ("hound fetching a flying disc", frozenset({11})),
    ("doggy in the backseat", frozenset({12})),
    ("pooch in the snow", frozenset({13})),
    ("automobile", frozenset({12, 26, 27, 32})),
    ("lorry", frozenset({28})),
    ("motorbike", frozenset({29})),
    ("bicycle", frozenset({30, 33, 34})),
    ("someone cycling in town", frozenset({30})),
    ("two-wheeler", frozenset({29, 30, 33, 34})),
    ("mass transit", frozenset({31, 127, 128, 129})),
    ("people on the beach", frozenset({37, 43, 136})),
    ("crowd at the seaside", frozenset({37})),
    ("tropical shore", frozenset({38})),
    ("surfer catching a swell", frozenset({39})),
    ("romantic stroll along the shore at dusk", frozenset({43})),
    ("yacht at dusk", frozenset({41})),
    ("dinghy moored at a jetty", frozenset({44})),
    ("watercraft", frozenset({40, 41, 44})),
    ("snowy mountain", frozenset({45, 70})),
    ("climber on the summit", frozenset({46})),
    ("stream in the woods", frozenset({47, 48})),
    ("trekking through the forest", frozenset({51})),
    ("urban skyline after dark", frozenset({52})),
    ("drone photo of skyscrapers", frozenset({56})),
    ("pedestrians on a busy sidewalk", frozenset({54})),
    ("youngsters", frozenset({59, 60, 61, 62, 63, 64})),
    ("toddler with a stuffed animal", frozenset({59})),
    ("baby asleep", frozenset({61})),
    ("infant in a feeding seat", frozenset({64})),
    ("tots having fun outdoors", frozenset({62})),
    ("racquet sport", frozenset({65})),
    ("team sport", frozenset({66, 67, 68})),
    ("football match", frozenset({67})),
    ("slam dunk", frozenset({68})),
    ("winter sports", frozenset({70, 71})),
    ("skater doing tricks", frozenset({69})),
    ("athletes in a race", frozenset({72})),
    ("marriage", frozenset({73, 74, 75, 76, 77})),
    ("newlyweds sharing dessert", frozenset({74})),
    ("flowers on the dining table", frozenset({78})),
    ("a single blossom up close", frozenset({79, 82, 83})),
    ("insect pollinating", frozenset({83})),
    ("proof of purchase", frozenset({84, 86})),
    ("paperwork", frozenset({84, 85, 86, 88, 90})),
    ("handwritten note", frozenset({85, 88})),
    ("novel lying open", frozenset({87})),
    ("contact details card", frozenset({89})),
    ("chat conversation on a phone", frozenset({91})),
    ("website capture", frozenset({92})),
    ("chart displayed on a monitor", frozenset({93})),
    ("navigation app", frozenset({94})),
    ("gaming", frozenset({95})),
    ("screen grab", frozenset({91, 92, 93, 94, 95})),
    ("songbird perched on a twig", frozenset({96})),
    ("gull by the sea", frozenset({97})),
    ("waterfowl", frozenset({99})),
    ("bird of prey", frozenset({101})),
    ("feathered friends in flight", frozenset({98})),
    ("cottage blanketed in white", frozenset({102})),
    ("dusk over the sea", frozenset({41, 43, 106})),
    ("sundown", frozenset({41, 43, 57, 106, 107, 108})),
    ("pyrotechnics", frozenset({109})),
    ("cooker and fridge", frozenset({110})),
    ("chef preparing a meal", frozenset({111})),
    ("washing up waiting to be done", frozenset({113})),
    ("sofa and television", frozenset({115})),
    ("sleeping quarters", frozenset({116})),
    ("holiday decorations", frozenset({118})),
    ("workplace", frozenset({119, 120, 121, 122})),
    ("meeting room", frozenset({121})),
    ("live music", frozenset({123, 124, 125, 126})),
    ("someone strumming on stage", frozenset({124, 125})),
    ("locomotive on the railway", frozenset({127, 128})),
    ("train at the platform", frozenset({128})),
    ("commuters on the metro", frozenset({129})),
    ("aircraft", frozenset({130, 131, 132})),
    ("window seat view on a flight", frozenset({132})),
    ("equestrian", frozenset({134, 136})),
    ("pony in a paddock", frozenset({133, 135})),
    ("livestock grazing", frozenset({133, 135, 137, 138})),
    ("fruit", frozenset({19, 20})),
    ("italian dinner", frozenset({16, 23})),
    ("fast food", frozenset({16, 18, 24})),
    ("healthy dinner with veggies", frozenset({15})),
    ("espresso", frozenset({22})),
    ("birthday celebration", frozenset({21})),
    ("bowl of broth", frozenset({17})),
    ("umbrella in a downpour", frozenset({140})),
    ("selfie", frozenset({141})),
    ("family dinner", frozenset({142})),
)
