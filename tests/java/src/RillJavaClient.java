import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A tiny Kafka Java client for the e2e tests (tests/e2e/test_java_tools.py).
 *
 * produce BOOTSTRAP TOPIC PARTITION N CODEC ACKS TS_BASE
 *   sends N records (key "k-i", value valueOf(codec, i), header h=hv-i, timestamp TS_BASE+i)
 *   and prints one line per acknowledged record: "ack <offset> <i>".
 * consume BOOTSTRAP TOPIC PARTITION FROM COUNT TIMEOUT_MS
 *   assign + seek, no group; prints one line per record:
 *   "rec <offset> <timestamp> <b64 key> <b64 value> <name=b64value,...|->".
 *
 * Values are deterministic so Python can recompute them: see value_of() in the test.
 */
public final class RillJavaClient {
    private RillJavaClient() {}

    static byte[] valueOf(String codec, int i) {
        StringBuilder sb = new StringBuilder();
        sb.append("java-").append(codec).append('-').append(i).append('-');
        // compressible, varied length
        for (int j = 0; j < (i % 7) * 20 + 10; j++) {
            sb.append((char) ('a' + (i + j) % 26));
        }
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: produce|consume ...");
            System.exit(2);
        }
        switch (args[0]) {
            case "produce":
                produce(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]), args[5], args[6],
                        Long.parseLong(args[7]));
                break;
            case "consume":
                consume(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]),
                        Integer.parseInt(args[5]), Long.parseLong(args[6]));
                break;
            default:
                System.err.println("unknown command " + args[0]);
                System.exit(2);
        }
    }

    static void produce(String bootstrap, String topic, int partition, int n, String codec, String acks, long tsBase)
            throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        p.put(ProducerConfig.ACKS_CONFIG, acks);
        // Idempotence (InitProducerId, sequences) is not what this test is about.
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "1");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                RecordHeaders headers = new RecordHeaders();
                headers.add("h", ("hv-" + i).getBytes(StandardCharsets.UTF_8));
                futures.add(producer.send(new ProducerRecord<>(topic, partition, tsBase + i,
                        ("k-" + i).getBytes(StandardCharsets.UTF_8), valueOf(codec, i), headers)));
            }
            producer.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = futures.get(i).get();
                System.out.println("ack " + (md.hasOffset() ? md.offset() : -1) + " " + i);
            }
        }
    }

    static void consume(String bootstrap, String topic, int partition, long from, int count, long timeoutMs) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.CHECK_CRCS_CONFIG, "true");
        Base64.Encoder b64 = Base64.getEncoder();
        TopicPartition tp = new TopicPartition(topic, partition);
        int got = 0;
        long deadline = System.currentTimeMillis() + timeoutMs;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
            consumer.assign(Collections.singletonList(tp));
            consumer.seek(tp, from);
            while (got < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    StringBuilder hs = new StringBuilder();
                    for (Header h : r.headers()) {
                        if (hs.length() > 0) {
                            hs.append(',');
                        }
                        hs.append(h.key()).append('=').append(b64.encodeToString(h.value()));
                    }
                    System.out.println("rec " + r.offset() + " " + r.timestamp() + " "
                            + (r.key() == null ? "-" : b64.encodeToString(r.key())) + " "
                            + (r.value() == null ? "-" : b64.encodeToString(r.value())) + " "
                            + (hs.length() == 0 ? "-" : hs.toString()));
                    got++;
                }
            }
        }
        System.out.flush();
        if (got < count) {
            System.err.println("timed out after " + got + " of " + count + " records");
            System.exit(3);
        }
    }
}
