// Small helpers for bench/run.py, compiled against the same kafka-clients jar that
// Kafka's ProducerPerformance uses.
//
//   RillBench create BOOTSTRAP TOPIC:PARTITIONS...   create topics (replication factor 1)
//   RillBench delete BOOTSTRAP TOPIC...              delete topics
//   RillBench consume BOOTSTRAP TOPIC PARTITIONS MESSAGES TIMEOUT_MS
//       consumer throughput without a consumer group: assign() every partition, seek to
//       the beginning and poll until MESSAGES records arrived (or the timeout). No
//       group.id and no offset commits, so it also runs against a broker that has no
//       group coordinator. Consumer defaults otherwise. Prints one line:
//       records=R bytes=B elapsed_ms=T first_record_ms=F
//       The topic is read twice in the same JVM; the first pass warms the JIT and is
//       not reported.
//   RillBench twice producer|consumer|e2e N WARM_ARG... MEASURED_ARG...
//       runs one of Kafka's own tools (ProducerPerformance, ConsumerPerformance,
//       EndToEndLatency; unchanged, called through their entry points) twice in one
//       JVM: first with the N warm-up arguments, then with the rest. Only the second
//       run is measured: a fresh JVM spends its first seconds compiling, which would
//       otherwise dominate every latency percentile. The line
//       "=== rill-bench: measured run ===" separates the two outputs.
import java.lang.reflect.Method;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class RillBench {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) usage();
        switch (args[0]) {
            case "create" -> create(args);
            case "delete" -> delete(args);
            case "consume" -> consume(args);
            case "twice" -> twice(args);
            default -> usage();
        }
    }

    static void usage() {
        System.err.println("usage: RillBench create|delete|consume BOOTSTRAP ...");
        System.exit(2);
    }

    static void twice(String[] args) throws Exception {
        if (args.length < 3) usage();
        String tool = args[1];
        int n = Integer.parseInt(args[2]);
        String[] warm = Arrays.copyOfRange(args, 3, 3 + n);
        String[] measured = Arrays.copyOfRange(args, 3 + n, args.length);
        runTool(tool, warm);
        System.out.flush();
        System.out.println("=== rill-bench: measured run ===");
        System.out.flush();
        runTool(tool, measured);
        System.out.flush();
        System.exit(0);
    }

    static void runTool(String tool, String[] args) throws Exception {
        switch (tool) {
            case "producer" -> {
                Class<?> c = Class.forName("org.apache.kafka.tools.ProducerPerformance");
                Method start = c.getDeclaredMethod("start", String[].class);
                start.setAccessible(true);
                start.invoke(c.getDeclaredConstructor().newInstance(), (Object) args);
            }
            case "consumer" -> {
                // exits the JVM itself (status 1) when it fails
                Class<?> c = Class.forName("org.apache.kafka.tools.ConsumerPerformance");
                c.getMethod("main", String[].class).invoke(null, (Object) args);
            }
            case "e2e" -> {
                Class<?> c = Class.forName("org.apache.kafka.tools.EndToEndLatency");
                Method m = c.getDeclaredMethod("mainNoExit", String[].class);
                m.setAccessible(true);
                int code = (Integer) m.invoke(null, (Object) args);
                if (code != 0) {
                    System.out.flush();
                    System.exit(code);
                }
            }
            default -> usage();
        }
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "rill-bench-admin");
        return Admin.create(p);
    }

    static void create(String[] args) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            String[] tp = args[i].split(":");
            topics.add(new NewTopic(tp[0], Integer.parseInt(tp[1]), (short) 1));
        }
        try (Admin a = admin(args[1])) {
            a.createTopics(topics).all().get(60, TimeUnit.SECONDS);
        }
        System.out.println("created " + topics.size());
    }

    static void delete(String[] args) throws Exception {
        List<String> names = new ArrayList<>();
        for (int i = 2; i < args.length; i++) names.add(args[i]);
        try (Admin a = admin(args[1])) {
            a.deleteTopics(names).all().get(60, TimeUnit.SECONDS);
        }
        System.out.println("deleted " + names.size());
    }

    static void consume(String[] args) {
        if (args.length != 6) usage();
        String bootstrap = args[1];
        String topic = args[2];
        int partitions = Integer.parseInt(args[3]);
        long want = Long.parseLong(args[4]);
        long timeoutMs = Long.parseLong(args[5]);

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("client.id", "rill-bench-assigned-consumer");

        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));

        long[] warm = readAll(p, tps, want, timeoutMs);
        if (warm[0] < want) {
            System.out.printf("warm-up pass read %d of %d records%n", warm[0], want);
            System.exit(1);
        }
        long[] m = readAll(p, tps, want, timeoutMs);
        System.out.printf("records=%d bytes=%d elapsed_ms=%.3f first_record_ms=%.3f%n",
                m[0], m[1], m[2] / 1e6, m[3] < 0 ? -1.0 : m[3] / 1e6);
        System.exit(m[0] >= want ? 0 : 1);
    }

    /** Reads the partitions from the beginning: {records, bytes, elapsed ns, ns to first}. */
    static long[] readAll(Properties p, List<TopicPartition> tps, long want, long timeoutMs) {
        long records = 0, bytes = 0;
        long start = System.nanoTime();
        long first = -1;
        long deadline = start + timeoutMs * 1_000_000L;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            while (records < want && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> batch = c.poll(Duration.ofMillis(500));
                if (!batch.isEmpty() && first < 0) first = System.nanoTime() - start;
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    records++;
                    bytes += r.serializedValueSize() + Math.max(0, r.serializedKeySize());
                }
            }
        }
        return new long[] {records, bytes, System.nanoTime() - start, first};
    }
}
