// The training text of the built-in model. Written for this project and released with it under
// the project's license; no third-party text is included. Paragraphs end a generation ("stop").
public enum BuiltinCorpus {
    public static let text = """
The sea was calm in the morning, and the fishing boats left the harbor before the sun rose over the hills. The old captain watched the water and said that the wind would change by noon. He had sailed these waters for forty years, and he knew every rock and every current along the coast.

By noon the wind did change. The sky turned gray, the waves grew tall, and the boats came back one by one. The captain stood on the pier and counted them until every boat was safe. Then he went home, made a pot of tea, and wrote the day in his small blue notebook.

A good soup begins with a slow fire and a little patience. Cut the onions thin, let them soften in butter, and add the carrots and the celery when the kitchen smells sweet. Pour in the stock, add a bay leaf and a pinch of salt, and let the pot simmer for an hour. Taste the soup before you serve it, because the last pinch of salt matters more than the first.

Bread needs time more than it needs skill. Mix the flour, the water, the salt and the yeast, and let the dough rest until it doubles. Fold it gently, shape it into a round loaf, and bake it in a hot oven until the crust sings when it cools. Fresh bread and warm soup make a simple dinner that feels like a gift.

The rocket stood on the launch pad while the engineers checked every valve and every wire. When the countdown reached zero, the engines roared, and the rocket climbed into the clear blue sky. Within ten minutes it reached orbit, and the small satellite it carried opened its solar panels to the sun. The satellite will measure the temperature of the oceans and send the data back to the ground every day.

The moon has no air and no weather, so the footprints left by the first visitors are still there. The stars do not twinkle on the moon, because there is no air to bend their light. From the surface of the moon, the earth looks like a bright blue marble hanging in the dark sky.

A program is a list of instructions that a computer follows one step at a time. A good program is easy to read, because people read code far more often than they write it. Choose clear names for your functions, keep each function small, and write a test for every bug you fix. When a program fails, read the error message slowly; it usually tells you exactly where to look.

The server accepts a connection, reads the request, and writes the response as soon as it is ready. A fast server does not wait for a timer to send data; it writes each message when the message is produced. When a client reads too slowly, the server must not keep every byte in memory forever, so it closes the connection and frees the memory for other clients.

Streaming makes a slow answer feel fast. Instead of waiting for the whole answer, the client shows each word as soon as it arrives, and the reader can start reading at once. If the reader does not like the answer, the stop button ends the stream and frees the worker for someone else.

The garden was quiet after the rain. Drops of water hung from the leaves of the apple tree, and the tomatoes were red and heavy on the vine. The gardener walked between the rows with a basket, picking beans and listening to the birds. She planted the garden every spring, and every autumn she shared the harvest with her neighbors.

Roses need sun, good soil, and a little care in the winter. Water them in the morning so the leaves can dry before night, and cut away the dead flowers so the plant can make new ones. A rose that is cared for will bloom again and again from early summer until the first frost.

The train left the city at seven in the evening and crossed the river as the lights came on. In the dining car, a family shared bread and cheese, and a student read a thick book about the history of the mountains. The train climbed through the forest all night, and in the morning the passengers woke to snow on the high peaks.

The city never sleeps completely. At night the bakers start their ovens, the trains carry workers home, and the streets are washed for the next day. In the morning the cafes open, the markets fill with fruit and flowers, and the children walk to school in small loud groups.

Music is made of sound and silence. A melody is a line of notes that rises and falls, and a rhythm is the pattern that tells the notes when to arrive. The piano can play a melody and its harmony at the same time, which is why so many composers write at the piano. A quiet song played well can fill a large hall.

The orchestra tuned their instruments while the audience found their seats. When the conductor raised her hands, the hall became silent, and the violins began a slow and gentle theme. The music grew louder and faster until the drums joined, and then it fell back to a single soft note that seemed to hang in the air.

Writing began as a way to count grain and sheep. The first writers pressed marks into wet clay, and the clay was dried in the sun so the records would last. Over many centuries the marks became letters, and the letters became books, and the books carried stories from one generation to the next.

A library is a quiet room full of other people's voices. Every book on the shelf was written by someone who wanted to be heard, and every reader who opens it gives that voice a place to speak. The best libraries are open to everyone, and they ask nothing in return but a little care for the books.

The weather today will be cool and cloudy, with light rain in the afternoon. The wind will come from the west at ten to twenty kilometers per hour. Tomorrow the clouds will clear, and the sun will return with warmer temperatures and a gentle breeze. Take an umbrella if you go out this afternoon.

Summer storms arrive quickly. The air grows heavy, the sky turns dark in the west, and the first thunder rolls across the fields. The rain falls hard for twenty minutes, and then the clouds move on and the evening light comes back, clean and golden.

To summarize a long text, first read it all the way through. Then write one sentence for each main idea, and remove any detail that the reader does not need. A good summary is short, clear, and true to the original; it tells the reader what matters and leaves the rest for later.

To explain an idea to a child, use short words and one example at a time. Say that the sun is a star, a very big and very hot star, and that the earth goes around it once every year. Ask the child what they think, and listen to the answer, because a good question is often the best part of a lesson.

A good email is short and polite. Start with a clear greeting, say what you need in the first sentence, and give the details that the reader needs to act. End by thanking the reader for their time, and read the email once more before you send it.

The mountain trail began in a forest of tall pines and climbed slowly toward the ridge. The hikers stopped by a cold stream to fill their bottles and rest their legs. Near the top the trees grew short and twisted, and the wind was cold even in the middle of summer. From the ridge they could see three lakes shining in the valley below.

The cat slept in the sun on the windowsill all afternoon. When the sun moved, the cat moved with it, one slow step at a time. In the evening the cat woke up, stretched, and walked to the kitchen to remind everyone that it was time for dinner.

The dog waited by the door every evening at six. When it heard the car in the street, it barked once and wagged its tail so hard that its whole body shook. Then it ran to the garden gate and brought back its old red ball, ready to play until dark.

Learning a language takes many small steps. Learn a few new words every day, read simple stories, and speak with people even when you make mistakes. After a few months the sounds become familiar, and one morning you notice that you understood a whole conversation without thinking about it.

The market opened at dawn. Farmers set out apples, pears, potatoes and bright green lettuce, and the smell of fresh coffee came from a small stand at the corner. People walked slowly between the tables, tasting cheese and choosing flowers, and talking about the weather and the harvest.

A bridge is a promise made of steel and stone. The engineers who design it must know the weight of every truck and the force of every storm. A well built bridge stands for a hundred years, and the people who cross it every day rarely think of the care that holds it up.

The lighthouse stood alone at the end of the cape. Every night its light turned slowly over the dark water, warning ships away from the rocks. The keeper climbed the stairs at sunset, cleaned the great lens, and watched the sea until morning.

The river begins as a small spring high in the mountains. It runs through meadows and forests, joins other streams, and grows wide and slow as it reaches the plain. Cities grew along its banks, because the river brought water, fish, and a road to the sea.

Science is a way of asking questions and testing the answers. A scientist makes a guess, designs an experiment, and measures what happens. If the measurement does not match the guess, the guess must change. Slowly, one careful experiment at a time, we learn how the world works.

Every good story has a beginning, a middle and an end. In the beginning we meet the hero and learn what she wants. In the middle the road is hard, and she must choose between what is easy and what is right. In the end she comes home changed, and the reader closes the book with a quiet smile.
"""
}
