import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * An idempotent kafka-clients producer for tests/e2e/test_idempotence.py.
 *
 * RillIdempotentProducer BOOTSTRAP TOPIC PARTITION N HOLD_AT REQUEST_TIMEOUT_MS
 *   enable.idempotence=true, acks=all, retries=MAX, max.in.flight=5. Sends records
 *   0..N-1 with value "idem-<i>". With HOLD_AT > 0 it first sends records below
 *   HOLD_AT, waits for all their acks, prints "held", reads one line from stdin (the
 *   test pauses the broker meanwhile) and then sends the rest, so those batches are in
 *   flight while the broker is stopped and the client retries them.
 *   Prints "ack <offset> <i>" per record, then "metric <name> <value>" for the
 *   producer's retry and error totals. Exits 1 if any send failed.
 */
public final class RillIdempotentProducer {
    private RillIdempotentProducer() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partition = Integer.parseInt(args[2]);
        int n = Integer.parseInt(args[3]);
        int holdAt = Integer.parseInt(args[4]);
        String requestTimeoutMs = args[5];

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.RETRIES_CONFIG, Integer.toString(Integer.MAX_VALUE));
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "2");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "2048");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, requestTimeoutMs);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "90000");
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        p.put(ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());

        List<Future<RecordMetadata>> futures = new ArrayList<>();
        boolean failed = false;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            int first = holdAt > 0 ? Math.min(holdAt, n) : n;
            for (int i = 0; i < first; i++) {
                futures.add(send(producer, topic, partition, i));
            }
            if (holdAt > 0) {
                producer.flush();
                System.out.println("held");
                System.out.flush();
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
                for (int i = first; i < n; i++) {
                    futures.add(send(producer, topic, partition, i));
                }
            }
            producer.flush();
            for (int i = 0; i < n; i++) {
                try {
                    RecordMetadata md = futures.get(i).get();
                    System.out.println("ack " + (md.hasOffset() ? md.offset() : -1) + " " + i);
                } catch (Exception e) {
                    failed = true;
                    System.out.println("fail " + i + " " + e);
                }
            }
            for (Map.Entry<MetricName, ? extends Metric> m : producer.metrics().entrySet()) {
                MetricName name = m.getKey();
                if (name.group().equals("producer-metrics")
                        && (name.name().equals("record-retry-total") || name.name().equals("record-error-total"))) {
                    System.out.println("metric " + name.name() + " " + m.getValue().metricValue());
                }
            }
        }
        System.out.flush();
        System.exit(failed ? 1 : 0);
    }

    static Future<RecordMetadata> send(KafkaProducer<byte[], byte[]> producer, String topic, int partition, int i) {
        byte[] value = ("idem-" + i).getBytes(StandardCharsets.UTF_8);
        return producer.send(new ProducerRecord<>(topic, partition, null, value));
    }
}
