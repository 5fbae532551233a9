// A broker-side KIP-714 receiver for tests: appends every PushTelemetry
// payload it is handed to the file named by `telemetry.receiver.file`, one
// line per push: `<client instance id> <terminating> <content type> <hex of
// the OTLP MetricsData bytes>`.
//
// A metrics reporter that implements ClientTelemetry is what makes Kafka
// advertise GetTelemetrySubscriptions and PushTelemetry at all. Compiled by
// the test that uses it (consumer-core/tests/it/telemetry.rs) with `javac`
// against the harness's broker jars (target/broker/jars); no build step of
// its own. Configure with
//   metric.reporters=TelemetryFileReceiver
//   telemetry.receiver.file=/path/to/pushes.txt
// (the class is in the default package, on the broker's class path).

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.metrics.KafkaMetric;
import org.apache.kafka.common.metrics.MetricsReporter;
import org.apache.kafka.server.authorizer.AuthorizableRequestContext;
import org.apache.kafka.server.telemetry.ClientTelemetry;
import org.apache.kafka.server.telemetry.ClientTelemetryPayload;
import org.apache.kafka.server.telemetry.ClientTelemetryReceiver;

@SuppressWarnings("deprecation")
public class TelemetryFileReceiver implements MetricsReporter, ClientTelemetry, ClientTelemetryReceiver {
    private volatile String path;

    @Override
    public void configure(Map<String, ?> configs) {
        Object file = configs.get("telemetry.receiver.file");
        path = file == null ? null : file.toString();
    }

    @Override
    public void init(List<KafkaMetric> metrics) {}

    @Override
    public void metricChange(KafkaMetric metric) {}

    @Override
    public void metricRemoval(KafkaMetric metric) {}

    @Override
    public void close() {}

    @Override
    public ClientTelemetryReceiver clientReceiver() {
        return this;
    }

    @Override
    public void exportMetrics(AuthorizableRequestContext context, ClientTelemetryPayload payload) {
        if (path == null) {
            return;
        }
        ByteBuffer data = payload.data().duplicate();
        StringBuilder line = new StringBuilder();
        line.append(payload.clientInstanceId()).append(' ')
            .append(payload.isTerminating()).append(' ')
            .append(payload.contentType()).append(' ');
        while (data.hasRemaining()) {
            line.append(String.format("%02x", data.get() & 0xff));
        }
        line.append('\n');
        synchronized (TelemetryFileReceiver.class) {
            try (FileOutputStream out = new FileOutputStream(path, true)) {
                out.write(line.toString().getBytes(StandardCharsets.UTF_8));
            } catch (IOException e) {
                throw new RuntimeException("writing " + path, e);
            }
        }
    }
}
