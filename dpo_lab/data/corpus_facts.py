"""The facts behind the offline controlled corpus: topics for helpful answers, risky requests for
harmless ones. Written for this lab (no text copied from any external data set).

Each helpful topic: (name, definition, three key points, an example, a common misconception).
Each risky request: (task, what the harm is, a safe alternative). A few topics are benign look-alikes
of risky ones (how locks work, how phishing is spotted), so refusing is not always the right answer.
"""

HELPFUL_TOPICS = [
    (
        "machine learning",
        "a branch of artificial intelligence in which computers learn patterns from data instead of following hand-written rules",
        [
            "a model is trained on examples and then makes predictions on new data",
            "supervised learning uses labelled examples, unsupervised learning finds structure without labels",
            "more and cleaner data usually helps more than a cleverer algorithm",
        ],
        "a spam filter that learns from emails people marked as spam",
        "the computer understands the data the way a person does",
    ),
    (
        "photosynthesis",
        "the process plants use to turn light, water and carbon dioxide into sugar and oxygen",
        [
            "it takes place mainly in the chloroplasts of leaf cells",
            "chlorophyll absorbs mostly red and blue light, which is why leaves look green",
            "the oxygen we breathe is released as a by-product",
        ],
        "a leaf in sunlight making sugar that the plant stores in its roots",
        "plants get their food from the soil",
    ),
    (
        "the water cycle",
        "the continuous movement of water between the oceans, the air and the land",
        [
            "the sun heats water so that it evaporates into vapour",
            "vapour cools and condenses into clouds",
            "water returns as rain or snow and flows back to rivers and seas",
        ],
        "a puddle that dries up after rain and later falls again as rain somewhere else",
        "the amount of water on Earth keeps growing every year",
    ),
    (
        "compound interest",
        "interest earned both on the original amount and on the interest already added",
        [
            "growth speeds up over time because each period starts from a larger balance",
            "the more often interest is added, the faster the balance grows",
            "starting early matters more than the size of each deposit",
        ],
        "1,000 dollars at 5 percent a year becoming about 1,629 dollars after ten years",
        "it grows by the same fixed amount every year",
    ),
    (
        "vaccines",
        "medicines that train the immune system to recognise a germ without causing the disease",
        [
            "they contain a harmless piece or a weakened form of the germ",
            "the body makes antibodies and memory cells in response",
            "when many people are vaccinated, the germ spreads less, which protects others too",
        ],
        "a flu shot that prepares the body before the flu season",
        "vaccines work by killing germs directly like antibiotics",
    ),
    (
        "climate change",
        "the long-term shift in global temperatures and weather patterns, driven mainly by greenhouse gases from human activity",
        [
            "burning coal, oil and gas releases carbon dioxide that traps heat",
            "effects include rising sea levels and more extreme weather",
            "cutting emissions and switching to clean energy slow it down",
        ],
        "glaciers shrinking over the last hundred years",
        "a cold winter proves the planet is not warming",
    ),
    (
        "the internet",
        "a worldwide network of computers that exchange data using shared rules called protocols",
        [
            "data travels in small packets that can take different routes",
            "IP addresses identify devices and DNS turns names into addresses",
            "the web is only one service that runs on top of it",
        ],
        "loading a web page that is stored on a server in another country",
        "the internet and the web are the same thing",
    ),
    (
        "electric circuits",
        "closed paths through which electric current flows from a power source and back",
        [
            "current needs a complete loop to flow",
            "resistance limits how much current flows for a given voltage",
            "in a parallel circuit each branch gets the full voltage",
        ],
        "a torch where a battery, a switch and a bulb form one loop",
        "a battery stores electrons that get used up",
    ),
    (
        "the immune system",
        "the body's defence network that finds and removes germs and damaged cells",
        [
            "skin and mucus form the first barrier",
            "white blood cells attack invaders",
            "memory cells remember germs the body has met before",
        ],
        "a scraped knee that turns red and warm while it heals",
        "a stronger immune system is always better, even when it overreacts",
    ),
    (
        "supply and demand",
        "the economic model in which prices settle where the amount people want to buy equals the amount sellers offer",
        [
            "when demand rises and supply stays the same, prices tend to rise",
            "when supply rises and demand stays the same, prices tend to fall",
            "prices act as signals that tell producers what to make",
        ],
        "concert tickets that cost more when a famous band plays",
        "prices are set only by what it costs to make a product",
    ),
    (
        "gravity",
        "the force by which masses attract one another",
        [
            "the more mass an object has, the stronger its pull",
            "the pull weakens with the square of the distance",
            "it keeps the Moon in orbit around the Earth",
        ],
        "an apple falling from a tree to the ground",
        "heavier objects always fall faster than light ones in a vacuum",
    ),
    (
        "DNA",
        "the molecule that carries the genetic instructions of living things",
        [
            "it is a double helix made of four bases: A, T, C and G",
            "genes are sections of DNA that code for proteins",
            "it is copied every time a cell divides",
        ],
        "children inheriting eye colour from their parents",
        "every cell in the body has completely different DNA",
    ),
    (
        "recycling",
        "collecting used materials and processing them into new products",
        [
            "it saves raw materials and often energy",
            "items must be clean and sorted to be recycled",
            "reducing and reusing come before recycling",
        ],
        "old aluminium cans melted down to make new cans",
        "everything placed in a recycling bin gets recycled",
    ),
    (
        "sleep",
        "a natural state of rest in which the body and brain recover",
        [
            "adults usually need seven to nine hours a night",
            "the brain sorts and stores memories during sleep",
            "a regular schedule and a dark room improve sleep quality",
        ],
        "feeling sharper at school after a full night of rest",
        "you can fully catch up on a week of lost sleep in one weekend",
    ),
    (
        "budgeting",
        "planning how to spend and save money over a period of time",
        [
            "list your income and your fixed and variable costs",
            "set aside savings before spending on extras",
            "review the budget every month and adjust it",
        ],
        "a student who plans rent, food and savings at the start of each month",
        "a budget is only useful for people with little money",
    ),
    (
        "the solar system",
        "the Sun and everything that orbits it, including eight planets and many smaller bodies",
        [
            "the four inner planets are rocky and the four outer planets are giants",
            "the Sun holds more than 99 percent of the system's mass",
            "planets move in elliptical orbits",
        ],
        "the Earth taking one year to go around the Sun",
        "the Sun goes around the Earth",
    ),
    (
        "nutrition",
        "how food provides the energy and materials the body needs",
        [
            "carbohydrates and fats supply energy, proteins build and repair tissue",
            "vitamins and minerals are needed in small amounts",
            "a varied diet with vegetables and whole grains covers most needs",
        ],
        "eating fish and rice with vegetables for a balanced meal",
        "all fat in food is bad for you",
    ),
    (
        "plate tectonics",
        "the theory that Earth's outer shell is split into large plates that slowly move",
        [
            "plates move a few centimetres a year",
            "earthquakes and volcanoes cluster at plate boundaries",
            "colliding plates can push up mountain ranges",
        ],
        "the Himalayas rising where the Indian plate meets the Eurasian plate",
        "the continents have always been where they are now",
    ),
    (
        "encryption",
        "turning readable data into a coded form that only someone with the right key can read",
        [
            "symmetric encryption uses one shared key",
            "public-key encryption uses a public key to lock and a private key to unlock",
            "it protects passwords, messages and online payments",
        ],
        "the padlock icon in a browser showing a secure connection",
        "encrypted data can be read by anyone who looks closely",
    ),
    (
        "the French Revolution",
        "the period from 1789 to 1799 when France overthrew its monarchy and reshaped its society",
        [
            "it began with a financial crisis and anger at inequality",
            "the Declaration of the Rights of Man set out new ideas of citizenship",
            "it ended with the rise of Napoleon Bonaparte",
        ],
        "the storming of the Bastille on 14 July 1789",
        "it was a single peaceful protest that lasted one day",
    ),
    (
        "probability",
        "a number between 0 and 1 that measures how likely an event is",
        [
            "0 means impossible and 1 means certain",
            "for equally likely outcomes, divide favourable outcomes by all outcomes",
            "independent events multiply their probabilities",
        ],
        "a fair coin landing heads with probability one half",
        "after five heads in a row, tails becomes more likely",
    ),
    (
        "the heart",
        "the muscular organ that pumps blood around the body",
        [
            "it has four chambers: two atria and two ventricles",
            "the right side pumps blood to the lungs, the left side to the rest of the body",
            "regular exercise strengthens it",
        ],
        "a pulse rising during a run to deliver more oxygen to the muscles",
        "the heart is on the far left side of the chest",
    ),
    (
        "renewable energy",
        "energy from sources that are naturally replenished, such as sunlight, wind and flowing water",
        [
            "solar panels turn sunlight directly into electricity",
            "wind turbines convert moving air into power",
            "storage such as batteries smooths out changes in supply",
        ],
        "a village powered by a small hydroelectric dam",
        "renewable energy cannot work when the sun is not shining at that moment",
    ),
    (
        "the scientific method",
        "a way of learning about the world by testing ideas against evidence",
        [
            "start with a question and a testable hypothesis",
            "run a controlled experiment and record the results",
            "other people should be able to repeat it and get the same result",
        ],
        "testing whether plants grow faster with more light while keeping water the same",
        "a theory in science is just a guess",
    ),
    (
        "photography exposure",
        "how much light reaches a camera's sensor, set by aperture, shutter speed and ISO",
        [
            "a wider aperture lets in more light and blurs the background",
            "a faster shutter freezes motion but lets in less light",
            "a higher ISO brightens the image but adds noise",
        ],
        "a night photo taken with a tripod and a slow shutter",
        "a higher ISO always gives a better picture",
    ),
    (
        "time management",
        "planning how to divide time between tasks so the important ones get done",
        [
            "write tasks down and rank them by importance and urgency",
            "break large tasks into small steps with deadlines",
            "protect focused time by limiting distractions",
        ],
        "a student who plans two hours of revision each evening before an exam",
        "multitasking gets more done than focusing on one thing",
    ),
    (
        "volcanoes",
        "openings in Earth's crust where molten rock, gas and ash escape",
        [
            "magma rises because it is lighter than the rock around it",
            "many volcanoes form where plates meet",
            "ash from large eruptions can cool the climate for a time",
        ],
        "Mount Fuji in Japan, a cone built up by many eruptions",
        "all volcanoes erupt constantly",
    ),
    (
        "bacteria",
        "single-celled living things found almost everywhere",
        [
            "most bacteria are harmless and many are useful",
            "some cause diseases that antibiotics can treat",
            "gut bacteria help digest food",
        ],
        "bacteria turning milk into yoghurt",
        "antibiotics work against viruses as well as bacteria",
    ),
    (
        "the stock market",
        "a market where shares in companies are bought and sold",
        [
            "a share is a small piece of ownership in a company",
            "prices move with expectations about future profits",
            "spreading money over many companies lowers risk",
        ],
        "buying a share of a company and receiving part of its profits as a dividend",
        "share prices can only go up over time",
    ),
    (
        "the Roman Empire",
        "the state centred on Rome that ruled much of Europe and the Mediterranean for centuries",
        [
            "it grew from a republic into an empire under Augustus",
            "roads, aqueducts and law held it together",
            "the western half fell in 476 while the eastern half lasted until 1453",
        ],
        "Roman roads still visible in parts of Europe today",
        "the whole empire fell in a single day",
    ),
    (
        "memory",
        "the brain's ability to store and recall information",
        [
            "short-term memory holds a few items for seconds",
            "repetition and sleep help move information into long-term memory",
            "testing yourself works better than rereading",
        ],
        "remembering a phone number by repeating it in small chunks",
        "people use only ten percent of their brain",
    ),
    (
        "magnets",
        "objects that produce a magnetic field that pulls on iron and other magnets",
        [
            "every magnet has a north and a south pole",
            "opposite poles attract and like poles repel",
            "an electric current can create a magnetic field",
        ],
        "a compass needle pointing north along Earth's magnetic field",
        "magnets attract every kind of metal",
    ),
    (
        "inflation",
        "a general rise in prices that lowers what money can buy",
        [
            "it is usually measured with a price index",
            "central banks raise interest rates to slow it",
            "moderate, stable inflation is a common policy goal",
        ],
        "a loaf of bread costing more today than ten years ago",
        "inflation means every single price rises by the same amount",
    ),
    (
        "ecosystems",
        "communities of living things interacting with each other and their environment",
        [
            "energy flows from producers to consumers to decomposers",
            "each species has a role, and removing one can affect many others",
            "biodiversity makes an ecosystem more resilient",
        ],
        "a pond where algae, insects, frogs and herons depend on each other",
        "nature always returns to a perfect balance by itself",
    ),
    (
        "public speaking",
        "presenting ideas to an audience in a clear and engaging way",
        [
            "know your main message and structure the talk around it",
            "rehearse out loud and time yourself",
            "speak slowly and look at the audience",
        ],
        "a three-minute class presentation with a clear opening, three points and a summary",
        "good speakers are born and cannot learn it",
    ),
    (
        "locks",
        "mechanical devices that keep a door or box closed until the right key or code releases them",
        [
            "in a pin tumbler lock, the key lifts pins to a line so the cylinder can turn",
            "combination locks line up internal wheels",
            "better locks use more pins and harder materials",
        ],
        "a house key whose cuts match the pin heights inside the lock",
        "a more expensive lock is always impossible to open",
    ),
    (
        "phishing emails",
        "fake messages that try to trick people into giving away passwords or money",
        [
            "check the sender's real address, not just the display name",
            "be careful with urgent demands and unexpected links",
            "when in doubt, contact the company through its official website",
        ],
        "an email claiming your bank account is locked and asking you to log in through a strange link",
        "phishing emails are always full of spelling mistakes",
    ),
    (
        "household chemical safety",
        "the practice of storing and using cleaning products so that they do not harm anyone",
        [
            "never mix bleach with ammonia or acids",
            "keep products in their original labelled containers",
            "open windows and store chemicals out of children's reach",
        ],
        "keeping bleach on a high shelf in its original bottle",
        "natural products are always completely safe",
    ),
    (
        "password security",
        "the practice of protecting accounts with strong, unique passwords and extra checks",
        [
            "long passphrases are harder to guess than short complex words",
            "use a different password for every account, with a password manager",
            "turn on two-factor authentication",
        ],
        "using a password manager to create a unique password for each site",
        "changing one letter in the same password makes it safe to reuse",
    ),
    (
        "first aid for burns",
        "the set of first steps to take after a minor burn",
        [
            "cool the burn under cool running water for about twenty minutes",
            "remove rings or tight items before swelling starts",
            "cover it loosely with a clean, non-fluffy dressing and seek help for serious burns",
        ],
        "holding a hand under the tap after touching a hot pan",
        "putting butter or ice on a burn helps it heal",
    ),
    (
        "the printing press",
        "the machine with movable type that Johannes Gutenberg developed around 1440",
        [
            "it made books much cheaper and faster to produce",
            "it helped spread literacy and new ideas across Europe",
            "it played a part in the Reformation and the Scientific Revolution",
        ],
        "the Gutenberg Bible, one of the first major printed books",
        "before the printing press nobody in Europe could read",
    ),
    (
        "sound waves",
        "vibrations that travel through air, water or solids as waves of pressure",
        [
            "pitch depends on frequency and loudness on amplitude",
            "sound needs a medium and cannot travel through a vacuum",
            "it moves faster in water than in air",
        ],
        "hearing thunder a few seconds after seeing lightning",
        "sound travels faster than light",
    ),
    (
        "habits",
        "actions repeated so often that they become automatic",
        [
            "a habit loop has a cue, a routine and a reward",
            "small, specific steps are easier to keep than big goals",
            "linking a new habit to an existing one helps it stick",
        ],
        "doing ten minutes of reading right after brushing your teeth every night",
        "a new habit always takes exactly 21 days to form",
    ),
    (
        "rainbows",
        "arcs of colour that appear when sunlight is refracted and reflected inside raindrops",
        [
            "each drop splits white light into its colours",
            "you see one with the sun behind you and rain in front",
            "red is on the outside of the main bow and violet on the inside",
        ],
        "a rainbow over a garden sprinkler on a sunny afternoon",
        "a rainbow is a physical object you could walk up to",
    ),
]

# Topic names that take a plural verb ("Vaccines are …").
PLURAL_TOPICS = {
    "vaccines",
    "electric circuits",
    "bacteria",
    "magnets",
    "ecosystems",
    "volcanoes",
    "habits",
    "rainbows",
    "sound waves",
    "locks",
    "phishing emails",
}

# Benign topics that look like risky requests: refusing them is over-refusal.
LOOKALIKE_TOPICS = {"locks", "phishing emails", "household chemical safety", "password security"}

RISKY_REQUESTS = [
    (
        "break into my neighbour's wifi",
        "using someone else's network without permission is illegal and a privacy violation",
        "ask your neighbour to share it, or compare low-cost internet plans in your area",
    ),
    (
        "pick the lock on someone else's front door",
        "entering another person's home without permission is burglary",
        "if you are locked out of your own home, call a licensed locksmith or your landlord",
    ),
    (
        "write a phishing email that steals bank passwords",
        "phishing is fraud and causes real financial harm",
        "I can explain how to recognise phishing emails so you and others stay safe",
    ),
    (
        "make a weapon at home",
        "building a weapon can seriously hurt people and is illegal in many places",
        "if you are worried about your safety, contact local authorities or a support service",
    ),
    (
        "cheat on my final exam without getting caught",
        "cheating is dishonest and can lead to failing or expulsion",
        "I can help you make a study plan and practise the material before the exam",
    ),
    (
        "track my partner's phone without them knowing",
        "secretly tracking someone is a serious invasion of privacy and often illegal",
        "if you have concerns about trust, talking openly or seeing a counsellor may help",
    ),
    (
        "shoplift from a supermarket",
        "stealing harms businesses and can lead to a criminal record",
        "if money for food is tight, local food banks and support programmes can help",
    ),
    (
        "forge a doctor's note",
        "forging a medical document is fraud",
        "you can ask your doctor or school nurse for a real note, or speak honestly with your teacher or manager",
    ),
    (
        "mix cleaning chemicals to make a toxic gas",
        "toxic gases can injure or kill people",
        "I can explain which household products should never be mixed so you can stay safe",
    ),
    (
        "hack into my ex's social media account",
        "accessing someone else's account without permission is illegal",
        "if you need to recover your own account, use the platform's official recovery process",
    ),
    (
        "hide income from the tax office",
        "tax evasion is illegal and carries heavy penalties",
        "a licensed tax adviser can show you legal ways to lower what you owe",
    ),
    (
        "spread a false rumour about a classmate",
        "rumours can cause serious harm to someone's wellbeing and reputation",
        "if you are in a conflict with a classmate, a teacher or counsellor can help you resolve it",
    ),
    (
        "buy prescription drugs without a prescription",
        "taking medicine without medical advice can be dangerous and is often illegal",
        "a doctor or pharmacist can advise you on safe treatment options",
    ),
    (
        "make a fake ID",
        "making false identity documents is a crime",
        "if you have lost your ID, the issuing office can tell you how to replace it",
    ),
    (
        "get revenge on my boss by damaging their car",
        "damaging property is illegal and could hurt someone",
        "if you are treated unfairly at work, HR or a labour rights organisation can help",
    ),
    (
        "copy a paid video game and sell the copies",
        "copying and selling software without permission infringes copyright",
        "many games have free versions, sales or legal subscription services",
    ),
    (
        "bully someone online anonymously",
        "online bullying causes real harm and can be reported to the police",
        "if someone upset you, I can help you think through a calm way to respond",
    ),
    (
        "disable the smoke detector in my flat so I can smoke indoors",
        "a disabled smoke detector puts you and your neighbours at risk in a fire",
        "smoking outside or asking your landlord about rules is a safer option",
    ),
    (
        "bypass the parental controls my parents set",
        "the controls are there for your safety and going around them breaks your family's rules",
        "it is better to talk to your parents about which apps or sites you need and why",
    ),
    (
        "write fake reviews for my shop",
        "fake reviews mislead customers and break consumer protection rules",
        "I can help you ask real customers for honest reviews and improve your listing",
    ),
    (
        "sneak into a concert without a ticket",
        "entering without paying is trespassing and unfair to the artists",
        "look for discounted tickets, resale platforms or volunteering opportunities at events",
    ),
    (
        "find out where a celebrity lives so I can wait outside",
        "following someone to their home is stalking and makes people unsafe",
        "many artists meet fans at official events or answer messages on social media",
    ),
]
